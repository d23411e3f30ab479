"""userMessage: any exception as the one line a clinician reads (never a traceback)."""

from __future__ import annotations

import logging

from vessa.errors import VessaError

log = logging.getLogger(__name__)


def userMessage(error: BaseException) -> str:
    """One line for the panel. Our own errors (`VessaError`: bad input, missing files, ... whose
    messages are written for users) as they are; known failures explained; anything else, an
    internal ValueError included, in a sentence that points to the Python console, where its
    traceback is logged."""
    if isinstance(error, VessaError):
        return str(error)
    if isinstance(error, ModuleNotFoundError):
        return f"the Python package {error.name!r} is missing; use 'Install dependencies' in the VESSA panel"
    if isinstance(error, MemoryError):
        return "not enough memory for this volume; crop it (Crop Volume module) or use a GPU"
    log.error("unexpected error", exc_info=error)
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"unexpected error ({type(error).__name__}: {detail}); details are in the Python console"
