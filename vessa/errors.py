"""Errors raised for bad input: each message names the file or value and the problem."""

from __future__ import annotations


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
