"""DrawnSliceCollector: the selected segment's drawn slices, read out of the scene for a completion.

Runs on the GUI thread when a run is requested, so a segment that cannot be completed (empty,
already a 3D shape, its drawn slices erased) is refused at once with a message and nothing changes.
The drawn-slice search runs on the segment's bounding box only (plus one voxel), so it costs
little even on a large volume.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from vessa.errors import InputError
from vessa.orientation import describe_slices
from vessa.priors.drawn_slices import DrawnSlices, find_drawn_slices

from . import scene_io
from .drawn_slice_memory import TAG, DrawnSliceMemory
from .oriented_image import arrayFromOrientedImage, referenceGeometry
from .segment_request import CompletionSummary, DrawnSliceInput


def drawnSlices(mask: np.ndarray) -> DrawnSlices:
    """`find_drawn_slices` on the mask's bounding box grown by one voxel, indices on the whole grid."""
    if not mask.any():
        return find_drawn_slices(mask)  # raises its "draw the structure" message
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    found = find_drawn_slices(mask[tuple(box)])
    return DrawnSlices(found.axis, found.indices + box[found.axis].start, found.masks, found.other_voxels)


def completionStatus(completion: CompletionSummary, ijkToRas: np.ndarray, seconds: float) -> str:
    """The panel's line after a completion, e.g. "Completed from 3 axial slices (k = 6, 12, 18) in
    4.2 s; check slice 9 first (Next slice to check): ..." """
    done = f"Completed from {describe_slices(ijkToRas, completion.axis, completion.drawn)} in {seconds:.1f} s"
    if completion.nextSlice is None:
        return f"{done}; no undrawn slice is uncertain. Check the preview, then Apply."
    return (
        f"{done}; check slice {completion.nextSlice} first (Next slice to check): where the preview is wrong, "
        "draw that slice in the segment and click again; else Apply."
    )


def readMemory(segment) -> DrawnSliceMemory | None:
    """The memory a segment's tag holds (None without one)."""
    text = vtk.reference("")
    return DrawnSliceMemory.fromTag(str(text)) if segment.GetTag(TAG, text) else None


def segmentOnReference(segmentationNode, segmentId: str, reference) -> np.ndarray:
    """One segment as bool (k, j, i) on the image `reference` (the segmentation's reference
    geometry, in the segmentation's coordinates), nearest neighbour."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    layer = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentationNode, segmentId, layer, False
    )
    shape = tuple(reversed(reference.GetDimensions()))
    if layer.GetPointData().GetScalars() is None or layer.GetNumberOfPoints() == 0:
        return np.zeros(shape, bool)
    values = arrayFromOrientedImage(layer)
    values[:] = values == segment.GetLabelValue()  # a shared layer holds several segments' labels
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        layer, reference, resampled, False, False, None, 0.0
    ):
        raise InputError(f"segment {segment.GetName()!r} could not be read on its segmentation's geometry")
    return arrayFromOrientedImage(resampled) != 0


class DrawnSliceCollector:
    """Reads a segment's drawn slices (and its `DrawnSliceMemory`) for a completion."""

    def collect(self, segmentationNode, segmentId: str, sourceVolumeNode) -> DrawnSliceInput:
        """The completion input of one segment; InputError saying what to do when there is none."""
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        name = segment.GetName()
        mask = scene_io.segmentMask(segmentationNode, segmentId, sourceVolumeNode)
        memory = readMemory(segment)
        try:
            if mask.any() and memory is not None and memory.holdsFor(mask, scene_io.nodeGeometry(sourceVolumeNode)):
                drawn = memory.drawnNow(mask)
                kept, erased = self._drawnOnly(mask, memory.axis, drawn)
                axis = memory.axis
            else:
                drawnSlices(mask)  # refuses an empty segment or a 3D shape now, on the GUI thread
                kept, axis, erased = mask, None, np.zeros(0, int)
        except InputError as error:
            raise InputError(f"segment {name!r}: {error}") from None
        reference = referenceGeometry(segmentationNode, vtk.VTK_UNSIGNED_CHAR)
        labelmap = segmentOnReference(segmentationNode, segmentId, reference)
        return DrawnSliceInput(kept, axis, erased, labelmap, sourceVolumeNode.GetID())

    def hasDrawnSlices(self, segmentationNode, segmentId: str, sourceVolumeNode) -> bool:
        """Whether the segment can be completed from drawn slices (for the default template source)."""
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None or sourceVolumeNode is None or sourceVolumeNode.GetImageData() is None:
            return False
        mask = scene_io.segmentMask(segmentationNode, segmentId, sourceVolumeNode)
        if not mask.any():
            return False
        memory = readMemory(segment)
        if memory is not None and memory.holdsFor(mask, scene_io.nodeGeometry(sourceVolumeNode)):
            return True
        try:
            drawnSlices(mask)
        except InputError:
            return False
        return True

    @staticmethod
    def _drawnOnly(mask: np.ndarray, axis: int, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`mask` on the drawn slices only, and the drawn slices that are empty."""
        kept = np.zeros_like(mask)
        index = [slice(None)] * 3
        index[axis] = drawn
        kept[tuple(index)] = mask[tuple(index)]
        erased = drawn[~np.moveaxis(kept, axis, 0)[drawn].any(axis=(1, 2))]
        if len(erased) == len(drawn):
            raise InputError("its drawn slices were erased: draw the structure on a few slices (or Undo)")
        return kept, erased
