"""ApplyLogic: write the preview into the user's segments in one undoable step."""

from __future__ import annotations

from vessa.errors import InputError

from .preview_logic import PreviewLogic
from .segment_modifier import SegmentModifier


class ApplyLogic:
    """Apply = save the state for undo, then set each previewed segment to its preview through
    the segment editor (mask / overwrite / intensity range honoured), then remove the preview.
    Only the previewed segments are written (one, the selected segment, unless batch)."""

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
        preview.remove()
        return preview.segmentIds()
