"""SegmentRequest: everything a background auto-segment job needs, copied out of the scene.

MRML nodes are not thread-safe, so the GUI thread copies the source volume, the templates and
the segmentation's geometry into a request; the job's worker thread touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vessa.io import Template, Volume


@dataclass
class DrawnSliceInput:
    """A segment drawn on a few slices, to be completed (template source "drawn").

    mask: bool (k, j, i) on the source grid, what the completer gets (the whole segment, or
    after an Apply only its drawn slices: `DrawnSliceMemory`); axis: the drawn axis when it is
    remembered (None: the completer finds it); erased: drawn slices the user emptied (kept
    empty); labelmap: the segment on the segmentation's reference geometry (bool, k, j, i), from
    which the drawn slices are restored after resampling; sourceVolumeId: the source volume node,
    on whose grid Apply records the memory."""

    mask: np.ndarray
    axis: int | None
    erased: np.ndarray
    labelmap: np.ndarray
    sourceVolumeId: str


@dataclass
class SegmentTask:
    """One segment to fill: its id and name in the user's segmentation, the text prompt, the
    templates (or the drawn slices to complete), and warnings found while collecting them."""

    segmentId: str
    segmentName: str
    text: str
    templates: list[Template]
    warnings: list[str] = field(default_factory=list)
    drawn: DrawnSliceInput | None = None


@dataclass
class SegmentRequest:
    """image: the source volume (copy); modality: its modality ("" = unknown);
    reference: an empty `vtkOrientedImageData` on the segmentation's reference geometry;
    toSegmentation, toWorld: 4x4 matrices from the volume's coordinates to the segmentation's
    and to the world's (its parent transforms), copied when the request was made;
    threshold: the probability from which a voxel is in the result (for the empty-result warning)."""

    image: Volume
    modality: str
    tasks: list[SegmentTask]
    reference: object
    toSegmentation: np.ndarray = field(default_factory=lambda: np.eye(4))
    toWorld: np.ndarray = field(default_factory=lambda: np.eye(4))
    threshold: float = 0.5


@dataclass
class TaskResult:
    """The model's output for one task.

    probability: float32 `vtkOrientedImageData` on the segmentation's reference geometry
    (what the preview and Apply use); sourceProbability: the same on the source volume's voxel
    grid, placed where the volume is in the world (its parent transforms applied: what the
    confidence overlay and slice navigation show); sliceConfidence: one value per slice along
    array axis `axis` of the source volume; completion: what a drawn-slice completion found
    (None for a template run).
    """

    task: SegmentTask
    probability: object
    sourceProbability: Volume
    sliceConfidence: np.ndarray
    axis: int
    seconds: float
    completion: CompletionSummary | None = None


@dataclass
class CompletionSummary:
    """A drawn-slice completion: the drawn slices (indices along `axis`, erased ones included),
    the slice to check first (None: none left), the slices the SAM encoder ran on (the rest came
    from its cache), and the source volume node its memory is recorded on at Apply."""

    axis: int
    drawn: np.ndarray
    nextSlice: int | None
    encoded: int
    sourceVolumeId: str
