"""DrawnSliceMemory: which slices of a segment the user drew, and what VESSA applied to the rest.

After a drawn-slice completion is applied, the segment is a 3D shape and its drawn slices can
no longer be told from the completed ones by looking. So Apply records, in the segment's tag
`VESSA.DrawnSlices` (saved with the scene and in .seg.nrrd files, restored by Undo), the drawn
axis, the drawn slice indices and a digest of every slice of the applied segment. On the next
run the drawn slices are the remembered ones plus every slice along that axis whose content
differs from what was applied (the user's corrections); the rest of the applied result is
ignored. The tag value avoids ':' and '|', which Slicer's segment-tag serialisation uses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from vessa.io import Volume

TAG = "VESSA.DrawnSlices"


def gridSignature(volume: Volume) -> str:
    """A short digest of a volume grid (shape and IJK-to-RAS to 1e-4 mm): the memory holds only
    on the grid it was recorded on."""
    geometry = np.round(volume.ijk_to_ras(), 4) + 0.0  # + 0.0: -0.0 and 0.0 hash alike
    text = f"{volume.shape}" + ",".join(f"{value:.4f}" for value in geometry.ravel())
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def sliceDigests(mask: np.ndarray, axis: int) -> dict[int, str]:
    """Digest of each non-empty slice of `mask` (k, j, i) along array axis `axis`."""
    digests = {}
    for index in np.flatnonzero(np.moveaxis(mask, axis, 0).any(axis=(1, 2))):
        plane = np.ascontiguousarray(np.take(mask, index, axis=axis), dtype=bool)
        digests[int(index)] = hashlib.blake2b(np.packbits(plane).tobytes(), digest_size=8).hexdigest()
    return digests


@dataclass(frozen=True)
class DrawnSliceMemory:
    """axis: array axis (0 = k, 1 = j, 2 = i); grid: `gridSignature` of the source volume;
    drawn: the slices the user drew; applied: `sliceDigests` of the segment after Apply."""

    axis: int
    grid: str
    drawn: tuple[int, ...]
    applied: dict[int, str]

    @classmethod
    def record(cls, applied: np.ndarray, axis: int, drawn, source: Volume) -> DrawnSliceMemory:
        """The memory of a segment just applied (`applied`: its mask on the source grid)."""
        return cls(axis, gridSignature(source), tuple(sorted(int(z) for z in drawn)), sliceDigests(applied, axis))

    def toTag(self) -> str:
        slices = ",".join(f"{z}-{digest}" for z, digest in sorted(self.applied.items()))
        return f"axis={self.axis};grid={self.grid};drawn={','.join(map(str, self.drawn))};applied={slices}"

    @classmethod
    def fromTag(cls, text: str) -> DrawnSliceMemory | None:
        """The memory in a tag value; None for an empty or unreadable one (then there is none)."""
        try:
            fields = dict(part.split("=", 1) for part in text.split(";"))
            applied = {}
            for item in filter(None, fields["applied"].split(",")):
                index, digest = item.split("-", 1)
                applied[int(index)] = digest
            drawn = tuple(int(z) for z in filter(None, fields["drawn"].split(",")))
            axis = int(fields["axis"])
            if axis not in (0, 1, 2) or not drawn:
                return None
            return cls(axis, fields["grid"], drawn, applied)
        except (KeyError, ValueError):
            return None

    def holdsFor(self, mask: np.ndarray, source: Volume) -> bool:
        """Whether the memory describes `mask` (the segment now, on the source grid): the same
        grid, and some applied slice beyond the drawn ones is still as it was applied (if none
        is, the completion was undone or erased and the segment is drawn afresh)."""
        if self.grid != gridSignature(source):
            return False
        now = sliceDigests(mask, self.axis)
        return any(now.get(z) == digest for z, digest in self.applied.items() if z not in self.drawn)

    def drawnNow(self, mask: np.ndarray) -> np.ndarray:
        """The slices to treat as drawn in `mask`: the remembered ones and every slice whose
        content differs from what was applied (sorted indices along `axis`)."""
        now = sliceDigests(mask, self.axis)
        changed = {z for z in set(now) | set(self.applied) if now.get(z) != self.applied.get(z)}
        return np.array(sorted(set(self.drawn) | changed), dtype=int)
