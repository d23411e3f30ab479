"""Segmentations: named, coloured, possibly overlapping binary segments on one grid.

Slicer's `.seg.nrrd` (layers for overlapping segments, names, colours) is read and written
with slicerio; any label volume (NRRD, NIfTI, ...) can be read as one segment per label.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicerio
from slicerio.segmentation import terminology_entry_from_string, terminology_entry_to_string

from vessa.errors import GeometryError, InputError
from vessa.io.atomic import atomic_path
from vessa.io.formats import read_volume, require_file
from vessa.io.volume import Volume

DESCRIPTION_TAG = "VESSA.Description"
TERMINOLOGY_FIELDS = 7  # context~category~type~typeModifier~anatomicContext~region~regionModifier


def default_color(index: int) -> tuple[float, float, float]:
    """A distinct colour for the index-th segment (golden-ratio hue steps)."""
    return colorsys.hsv_to_rgb((0.1 + index * 0.618034) % 1.0, 0.65, 0.95)


@dataclass
class Segment:
    """One segment: a name, a boolean mask indexed (k, j, i), a colour (r, g, b in 0..1), free
    text, and its Slicer terminology entry ("" if none; `vessa.io.terminology`)."""

    name: str
    mask: np.ndarray
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    description: str = ""
    terminology: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise InputError("segment name must not be empty")
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim == 2:
            self.mask = self.mask[np.newaxis]


@dataclass
class Segmentation:
    """Segments sharing one grid (shape of the masks + LPS geometry as in `Volume`)."""

    segments: list[Segment]
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        shapes = {s.mask.shape for s in self.segments}
        if self.shape is None:
            if not shapes:
                raise InputError("an empty segmentation needs an explicit grid shape")
            self.shape = next(iter(shapes))
        self.shape = tuple(int(n) for n in self.shape)
        if shapes - {self.shape}:
            raise GeometryError(f"segment masks have shapes {sorted(shapes)}, expected {self.shape}")
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise InputError(f"segment names must be unique, got {names}")
        # Validates spacing/origin/direction the same way as a Volume does.
        grid = self.geometry()
        self.spacing, self.origin, self.direction = grid.spacing, grid.origin, grid.direction

    @classmethod
    def on_grid(cls, reference: Volume, segments: list[Segment] | None = None) -> Segmentation:
        """A segmentation on `reference`'s grid."""
        return cls(list(segments or []), reference.spacing.copy(), reference.origin.copy(),
                   reference.direction.copy(), reference.shape)

    def geometry(self) -> Volume:
        """An all-zero uint8 volume on this segmentation's grid (its geometry)."""
        return Volume(np.zeros(self.shape, np.uint8), self.spacing, self.origin, self.direction)

    def names(self) -> list[str]:
        """Segment names in order."""
        return [s.name for s in self.segments]

    def get(self, name: str) -> Segment:
        """The segment called `name` (case-insensitive); InputError lists the names there are."""
        for segment in self.segments:
            if segment.name == name:
                return segment
        matches = [s for s in self.segments if s.name.lower() == name.strip().lower()]
        if len(matches) == 1:
            return matches[0]
        raise InputError(f"no segment named {name!r}; segments: {', '.join(self.names()) or '(none)'}")

    def add(self, name: str, mask: np.ndarray, color: tuple[float, float, float] | None = None,
            description: str = "", terminology: str = "") -> Segment:
        """Append a segment (mask on this grid) and return it."""
        segment = Segment(name, mask, color or default_color(len(self.segments)), description, terminology)
        if segment.mask.shape != self.shape:
            raise GeometryError(f"mask of {name!r} has shape {segment.mask.shape}, grid is {self.shape}")
        if name in self.names():
            raise InputError(f"segment {name!r} already exists")
        self.segments.append(segment)
        return segment

    def mask_volume(self, name: str) -> Volume:
        """The named segment as a uint8 volume (0/1) on this grid."""
        return self.geometry().with_array(self.get(name).mask.astype(np.uint8))

    @classmethod
    def from_labelmap(cls, labelmap: Volume, names: Mapping[int, str] | None = None) -> Segmentation:
        """One segment per non-zero label of an integer label volume, named from `names`."""
        array = labelmap.array
        if not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
            raise InputError("label volume holds non-integer values")
        labels = [int(v) for v in np.unique(labelmap.array) if v != 0]
        if names is not None:
            labels = [label for label in labels if label in names]
        segmentation = cls.on_grid(labelmap)
        for index, label in enumerate(labels):
            name = names[label] if names is not None else f"label_{label}"
            segmentation.add(name, labelmap.array == label, default_color(index))
        return segmentation


def _is_seg_nrrd(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def read_segmentation(path: str | os.PathLike, names: Mapping[int, str] | None = None) -> Segmentation:
    """Read a Slicer `.seg.nrrd` (names, colours, overlapping layers) or a plain label volume."""
    path = require_file(path, "segmentation")
    if not _is_seg_nrrd(path):
        return Segmentation.from_labelmap(read_volume(path), names)
    try:
        data = slicerio.read_segmentation(str(path))
    except Exception as error:  # slicerio/pynrrd raise many types for corrupt headers
        raise InputError(f"{path}: unreadable segmentation ({error})") from None
    voxels = data.get("voxels")
    if voxels is None or voxels.ndim not in (3, 4):
        raise InputError(f"{path}: segmentation voxels must be 3D or layered 4D")
    grid = Volume.from_ijk_to_lps(np.zeros((1, 1, 1)), data["ijkToLPS"])
    shape_kji = tuple(reversed(voxels.shape[-3:]))
    segments = []
    for index, info in enumerate(data.get("segments", [])):
        mask = slicerio.segment_mask(data, info).transpose(2, 1, 0)
        color = tuple(float(c) for c in info.get("color", default_color(index)))
        name = info.get("name") or info.get("id") or f"segment_{index + 1}"
        description = info.get("tags", {}).get(DESCRIPTION_TAG, "")
        terminology = terminology_entry_to_string(info["terminology"]) if "terminology" in info else ""
        segments.append(Segment(name, mask, color, description, terminology))
    return Segmentation(segments, grid.spacing, grid.origin, grid.direction, shape_kji)


def write_segmentation(segmentation: Segmentation, path: str | os.PathLike) -> Path:
    """Write a Slicer `.seg.nrrd` (overlapping segments go to extra layers) atomically."""
    path = Path(path)
    if not _is_seg_nrrd(path):
        raise InputError(f"{path}: segmentations are written as .seg.nrrd")
    shape_ijk = tuple(reversed(segmentation.shape))
    data = slicerio.create_segmentation(shape_ijk, segmentation.geometry().ijk_to_lps())
    for index, segment in enumerate(segmentation.segments):
        info = {"id": f"Segment_{index + 1}", "name": segment.name, "color": list(segment.color)}
        if segment.description:
            # Slicer keeps free text about a segment in its tags; "|" separates tags there.
            info["tags"] = {DESCRIPTION_TAG: segment.description.replace("|", "/")}
        if len(segment.terminology.split("~")) == TERMINOLOGY_FIELDS:
            info["terminology"] = terminology_entry_from_string(segment.terminology)
        slicerio.add_segment(data, segment.mask.transpose(2, 1, 0), info)
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), data)
    return path
