"""Names of slice orientations (axial, coronal, sagittal, oblique) for messages about drawn slices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AXIS_NAMES = ("k", "j", "i")  # array axes 0, 1, 2 of a (k, j, i) volume
ALIGNED_COSINE = 0.97  # a slice normal within ~14 degrees of a patient axis is named after it


def slice_orientation(ijk_to_ras: np.ndarray, axis: int) -> str:
    """"axial", "coronal" or "sagittal" for the slices across array axis `axis` (0 = k, 1 = j,
    2 = i) of a volume whose IJK-to-RAS (or LPS) matrix is `ijk_to_ras`; "oblique" when their
    normal is not close to one patient axis."""
    normal = np.abs(np.asarray(ijk_to_ras, float)[:3, 2 - axis])
    normal /= np.linalg.norm(normal)
    if normal.max() < ALIGNED_COSINE:
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(normal.argmax())]


def describe_slices(ijk_to_ras: np.ndarray, axis: int, indices: Sequence[int]) -> str:
    """E.g. "3 axial slices (k = 6, 12, 18)"."""
    count = len(indices)
    names = ", ".join(str(int(index)) for index in indices)
    plural = "s" if count != 1 else ""
    return f"{count} {slice_orientation(ijk_to_ras, axis)} slice{plural} ({AXIS_NAMES[axis]} = {names})"
