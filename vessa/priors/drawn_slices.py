"""Which slices of a partly drawn segment the user drew, and along which array axis.

A user paints a structure on a few slices of one orientation (in Slicer's Segment Editor,
slice views aligned with the volume). Along the axis normal to those slices the drawn
voxels form runs of one voxel (or a few, where neighbouring slices were drawn); along the
two in-plane axes they form long runs. So the drawn axis is the one with the shortest mean
run length, and the drawn slices are that axis's non-empty slices.

Drawn in two orientations (say three axial slices and one coronal), each voxel is assigned
to the axis along which it is thinnest; the axis holding most voxels wins and the others
are reported (`DrawnSlices.other_voxels`) so the caller can say what was left out: the
voxels of the other orientation are ignored as drawn slices but never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vessa.errors import InputError

# a structure "drawn on slices" has a mean run length along its drawn axis of at most this
# many voxels; above it every axis shows long runs and the segment is a 3D shape
MAX_DRAWN_RUN = 3.0
AXIS_NAMES = ("k", "j", "i")


@dataclass(frozen=True)
class DrawnSlices:
    """The drawn slices of a segment: `axis` (array axis 0 = k, 1 = j, 2 = i), `indices`
    (sorted slice indices along it), `masks` [len(indices), rows, cols] (bool, the drawn
    masks as they are), `other_voxels` (voxels drawn in another orientation, ignored) and
    `empty` (slices the user marked as not holding the structure, e.g. erased after a result:
    sorted indices, none of them in `indices`)."""

    axis: int
    indices: np.ndarray
    masks: np.ndarray
    other_voxels: int
    empty: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def count(self) -> int:
        return len(self.indices)

    def slices_to_known(self, count: int) -> np.ndarray:
        """For each of `count` slices along the axis, how many slices away the nearest known one
        is (drawn, or drawn empty; 0 on them) [count]."""
        known = np.concatenate([self.indices, self.empty])
        return np.abs(np.arange(count)[:, None] - known[None, :]).min(axis=1)

    def plane(self, index: int) -> np.ndarray:
        """The drawn mask of slice `index` (which must be drawn)."""
        position = int(np.searchsorted(self.indices, index))
        if position >= len(self.indices) or self.indices[position] != index:
            raise KeyError(f"slice {index} is not drawn")
        return self.masks[position]


def run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """For each voxel of `mask`, the length of the run of set voxels along `axis` it lies in
    (0 outside the mask)."""
    moved = np.moveaxis(np.asarray(mask, bool), axis, 0)
    n = moved.shape[0]
    forward = np.zeros(moved.shape, np.int32)
    backward = np.zeros(moved.shape, np.int32)
    for z in range(n):
        forward[z] = np.where(moved[z], (forward[z - 1] if z else 0) + 1, 0)
    for z in range(n - 1, -1, -1):
        backward[z] = np.where(moved[z], (backward[z + 1] if z < n - 1 else 0) + 1, 0)
    lengths = np.where(moved, forward + backward - 1, 0)
    return np.moveaxis(lengths, 0, axis)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (one slice per axis) holding every set voxel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def mask_dice(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks of one shape (a drawn or held-out reference: non-empty)."""
    return 2.0 * float((predicted & reference).sum()) / max(float(predicted.sum() + reference.sum()), 1.0)


def find_drawn_slices(mask: np.ndarray, axis: int | None = None) -> DrawnSlices:
    """The drawn slices of a (k, j, i) mask; `axis` forces the drawn axis.

    Raises InputError for an empty mask, and for a mask that is not drawn on slices of one
    axis (a 3D shape: mean run length above `MAX_DRAWN_RUN` along every axis) unless `axis`
    is given.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise InputError(f"a segment mask must be 3D (k, j, i), got shape {mask.shape}")
    if not mask.any():
        raise InputError("the segment is empty: draw the structure on a few slices first (one is enough to start)")
    if axis is None:
        box = bounding_box(mask)  # runs end inside it: measured there only
        inner = mask[box]
        lengths = np.stack([run_lengths(inner, a) for a in range(3)])  # [3, k, j, i] of the box
        candidates = [a for a in range(3) if mask.shape[a] > 1]
        inside = lengths[:, inner]  # [3, voxels]
        owner = np.array(candidates)[np.argmin(inside[candidates], axis=0)]
        axis = int(np.bincount(owner, minlength=3).argmax())
        if inside[axis][owner == axis].mean() > MAX_DRAWN_RUN:
            raise InputError(
                "the segment is already a 3D shape (not a few drawn slices of one orientation): nothing to "
                "complete; to fill it from a few slices, keep only those slices (drawn in slice views aligned "
                "with the volume), or use it as a template for another volume"
            )
        drawn = inner & (lengths[axis] <= lengths[[a for a in candidates if a != axis]].min(axis=0))
        others = tuple(a for a in range(3) if a != axis)
        indices = np.flatnonzero(drawn.any(axis=others)) + box[axis].start
    else:
        if not 0 <= axis < 3:
            raise InputError(f"axis={axis}: must be 0, 1 or 2 (array axis k, j, i)")
        indices = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    masks = np.moveaxis(mask, axis, 0)[indices]  # the drawn slices as they are
    other = int(mask.sum() - masks.sum())
    return DrawnSlices(axis, indices, masks.copy(), other)
