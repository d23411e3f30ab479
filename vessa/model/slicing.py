"""Cutting volumes into model-sized 2D slices and putting predictions back on the exact grid.

Conventions: arrays are (k, j, i); "array axis" a = 0, 1, 2 is k, j, i, whose spacing is
`spacing[2 - a]` and whose LPS direction is `direction[:, 2 - a]`.

- Slicing axis (`slicing_axis`): a length-1 axis if there is one (a 2D image); otherwise an
  axis whose two in-plane spacings agree within 1 % (in-plane isotropic), preferring the
  coarsest spacing along the axis, then the fewest slices (largest slices: fewer encoder
  passes, more context per slice). With no in-plane-isotropic axis, the coarsest axis.
  A typical CT/MR (0.7 x 0.7 x 5 mm) is cut into its acquired slices.
- Templates are brought to the target's axis order and signs (`orient_like`: a permutation
  and flips of the array, no interpolation), so their slices show the same anatomical plane
  the same way up.
- Each slice is resized with its physical aspect ratio kept so that its longer side fills
  the S x S model input, and padded at the bottom/right (`SquareFrame`); predictions are
  cropped and resized back to the slice's own rows x columns, so the output grid is the
  input grid exactly.
- Template slice per target slice (`template_slices`): the target slice's relative position
  z / (n - 1) (0.5 for a single slice) is mapped to the template's slice range, and the
  nearest template slice that contains the structure is used (with a limit on the distinct
  template slices, the nearest of that many evenly spaced ones). The location prior of a
  target slice (`relative_slices`) is the template's slice at that relative position itself,
  empty or not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ISOTROPY_TOLERANCE = 0.01


def array_spacing(spacing_ijk: np.ndarray) -> np.ndarray:
    """Spacing per array axis (k, j, i) from spacing along (i, j, k)."""
    return np.asarray(spacing_ijk, dtype=float)[::-1].copy()


def slicing_axis(shape: tuple[int, int, int], spacing_ijk: np.ndarray) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) to cut along; rules in the module docstring."""
    singles = [axis for axis in range(3) if shape[axis] == 1]
    if singles:
        return singles[0]
    spacing = array_spacing(spacing_ijk)

    def in_plane_isotropic(axis: int) -> bool:
        a, b = (spacing[other] for other in range(3) if other != axis)
        return abs(a - b) <= ISOTROPY_TOLERANCE * max(a, b)

    candidates = [axis for axis in range(3) if in_plane_isotropic(axis)] or [0, 1, 2]
    return max(candidates, key=lambda axis: (round(float(spacing[axis]), 3), -shape[axis], -axis))


def orient_like(
    array: np.ndarray, direction: np.ndarray, target_direction: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Permute/flip `array` (k, j, i) so its axes follow the target's axes as closely as possible.

    Returns the reoriented array (a view) and `order`: target array axis a takes the source
    array axis order[a] (use it to reorder per-axis spacings).
    """
    source = [np.asarray(direction)[:, 2 - a] for a in range(3)]
    target = [np.asarray(target_direction)[:, 2 - a] for a in range(3)]
    order = max(
        itertools.permutations(range(3)),
        key=lambda perm: sum(abs(float(target[a] @ source[perm[a]])) for a in range(3)),
    )
    oriented = np.transpose(array, order)
    flips = [a for a in range(3) if float(target[a] @ source[order[a]]) < 0]
    if flips:
        oriented = np.flip(oriented, axis=flips)
    return oriented, tuple(order)


@dataclass(frozen=True)
class SquareFrame:
    """Maps rows x cols slices into the S x S model input and back (aspect kept, padded)."""

    rows: int
    cols: int
    height: int
    width: int
    size: int

    @classmethod
    def for_slices(cls, rows: int, cols: int, row_spacing: float, col_spacing: float, size: int) -> SquareFrame:
        """Frame for slices of rows x cols voxels with the given physical spacings (mm)."""
        extent_rows, extent_cols = rows * row_spacing, cols * col_spacing
        scale = size / max(extent_rows, extent_cols)
        height = int(min(size, max(1, round(extent_rows * scale))))
        width = int(min(size, max(1, round(extent_cols * scale))))
        return cls(rows, cols, height, width, size)

    def to_square(self, slices: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """[N, C, rows, cols] -> [N, C, S, S] (resized content top-left, zero padding);
        mode "nearest" for label maps."""
        if mode == "nearest":
            resized = F.interpolate(slices.float(), size=(self.height, self.width), mode="nearest")
        else:
            resized = _resize(slices.float(), (self.height, self.width))
        return F.pad(resized, (0, self.size - self.width, 0, self.size - self.height))

    def from_square(self, square: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] -> [N, C, rows, cols] (crop the content, resize back)."""
        return _resize(square[..., : self.height, : self.width].float(), (self.rows, self.cols))


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def template_slices(
    target_count: int, present: np.ndarray, template_count: int, limit: int | None = None
) -> np.ndarray:
    """Template slice index for each of `target_count` target slices (see module docstring).

    present: sorted indices of the template slices that contain the structure (non-empty);
    limit: pick among at most this many of them, evenly spaced over `present` (first and last
    included), so that at most `limit` distinct template slices are used.
    """
    present = np.asarray(present)
    if limit is not None and len(present) > limit:
        present = present[np.unique(np.linspace(0, len(present) - 1, limit).round().astype(int))]
    wanted = _relative_positions(target_count) * (template_count - 1)
    nearest = np.abs(present[None, :] - wanted[:, None]).argmin(axis=1)
    return present[nearest]


def relative_slices(target_count: int, template_count: int) -> np.ndarray:
    """Template slice index at each target slice's relative position (nearest, empty or not)."""
    return np.rint(_relative_positions(target_count) * (template_count - 1)).astype(int)


def _relative_positions(count: int) -> np.ndarray:
    """z / (count - 1) for each slice z (0.5 for a single slice)."""
    return np.array([0.5]) if count == 1 else np.arange(count) / (count - 1)
