"""Errors raised for bad input: each message names the file or value and the problem."""

from __future__ import annotations

import re


class VessaError(Exception):
    """Base class of every error VESSA raises on purpose (bad input, missing files, ...)."""


class InputError(VessaError):
    """An input file or array is missing, unreadable, of the wrong shape or not finite."""


class GeometryError(VessaError):
    """Two grids that must match (image and label, volume and template) do not."""


class BankError(VessaError):
    """A template bank is missing, empty or inconsistent."""


class DownloadError(VessaError):
    """A download failed (network error, HTTP error status)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 does not match the expected one; the file is not kept."""


class CheckpointError(VessaError):
    """A checkpoint is unknown, corrupt, or does not fit the model."""


class JobError(VessaError):
    """A training or inference job cannot start or continue (bad spec, cancelled, diverged)."""


def torch_load_reason(error: BaseException) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, in one line, without torch's
    advice to load it with weights_only=False (that would run whatever code the file holds)."""
    text = str(error).strip()
    refused = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if refused:
        detail = refused.group(1).strip().splitlines()[0]
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
        if unsafe:
            return f"it holds a {unsafe.group(1)} object, which VESSA does not load from a file"
        return detail.rstrip(".")
    first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return first if first and "weights_only" not in first else type(error).__name__
