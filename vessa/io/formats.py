"""Read and write volumes: NRRD, NIfTI, MetaImage and TIFF through SimpleITK, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from vessa.errors import InputError
from vessa.io.atomic import atomic_path
from vessa.io.volume import Volume

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".tif", ".tiff")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return `path` as a Path, raising InputError if it does not exist or is not a file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} is not a file: {path}")
    return path


def require_volume_suffix(path: str | os.PathLike, what: str = "") -> Path:
    """`path` as a Path; InputError (naming `what`, e.g. an option) unless its suffix is a volume format."""
    path = Path(path)
    if not _suffix(path):
        raise InputError(f"{what + ' ' if what else ''}{path}: unsupported image format "
                         f"(use one of {', '.join(VOLUME_SUFFIXES)})")
    return path


def read_volume(path: str | os.PathLike, allow_nonfinite: bool = False) -> Volume:
    """Read a scalar 2D/3D image; 4D, vector, unreadable, NaN/inf images raise InputError."""
    path = require_volume_suffix(require_file(path, "image"))
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"{path}: unreadable image ({reason})") from None
    try:
        volume = Volume.from_sitk(image)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    if not allow_nonfinite:
        volume.require_finite(str(path))
    return volume


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write `volume` to `path` (format from the suffix) via a temporary file and a rename."""
    path = require_volume_suffix(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
    return path
