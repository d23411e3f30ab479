"""userMessage: any exception as the one line a clinician reads (never a traceback)."""

from __future__ import annotations

import logging

from vessa.errors import VessaError

log = logging.getLogger(__name__)


def userMessage(error: BaseException) -> str:
    """One line for the panel: our own errors as they are, known failures explained, anything
    else named by type (its traceback goes to the log, i.e. Slicer's Python console)."""
    if isinstance(error, (VessaError, ValueError)):
        return str(error)
    if isinstance(error, ModuleNotFoundError):
        return f"the Python package {error.name!r} is missing; use 'Install dependencies' in the VESSA panel"
    if isinstance(error, MemoryError):
        return "not enough memory for this volume; crop it (Crop Volume module) or use a GPU"
    log.error("unexpected error", exc_info=error)
    return f"unexpected error ({type(error).__name__}: {error}); details are in the Python console"
