"""ApplyLogic: write the preview into the user's segments in one undoable step."""

from __future__ import annotations

import slicer

from vessa.errors import InputError

from . import scene_io
from .drawn_slice_memory import TAG, DrawnSliceMemory
from .preview_logic import PreviewLogic
from .segment_modifier import SegmentModifier
from .segment_request import TaskResult


class ApplyLogic:
    """Apply = save the state for undo, then set each previewed segment to its preview through
    the segment editor (mask / overwrite / intensity range honoured), then remove the preview.
    Only the previewed segments are written (one, the selected segment, unless batch). A
    drawn-slice completion also records its `DrawnSliceMemory` in the segment's tag (after the
    undo state, so Undo restores the previous tag too)."""

    def __init__(self, modifier: SegmentModifier):
        self.modifier = modifier

    def apply(self, preview: PreviewLogic) -> list[str]:
        """Write `preview` and remove it; the ids of the segments written."""
        segmentation = preview.segmentationNode.GetSegmentation()
        missing = [segmentId for segmentId in preview.segmentIds() if segmentation.GetSegment(segmentId) is None]
        if missing:
            raise InputError(f"segment(s) {', '.join(missing)} were deleted after the preview was made; run again")
        self.modifier.saveStateForUndo()
        for segmentId in preview.segmentIds():
            self.modifier.modifySegmentByLabelmap(preview.segmentationNode, segmentId, preview.labelmap(segmentId))
        for result in preview.results.values():
            if result.completion is not None:
                self._remember(preview.segmentationNode, result)
        preview.remove()
        return preview.segmentIds()

    @staticmethod
    def _remember(segmentationNode, result: TaskResult) -> None:
        """Record which slices were drawn and what was applied (on the source grid), in the tag."""
        completion = result.completion
        sourceNode = slicer.mrmlScene.GetNodeByID(completion.sourceVolumeId)
        segment = segmentationNode.GetSegmentation().GetSegment(result.task.segmentId)
        if sourceNode is None or sourceNode.GetImageData() is None:
            segment.RemoveTag(TAG)  # without its grid nothing can be remembered; the next run looks afresh
            return
        applied = scene_io.segmentMask(segmentationNode, result.task.segmentId, sourceNode)
        memory = DrawnSliceMemory.record(
            applied, completion.axis, completion.drawn, scene_io.nodeGeometry(sourceNode)
        )
        segment.SetTag(TAG, memory.toTag())
