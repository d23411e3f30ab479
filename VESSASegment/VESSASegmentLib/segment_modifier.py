"""SegmentModifier: how Apply writes into the user's segmentation (undo state + masked write).

The effect passes the Segment Editor's own (`scriptedEffect.saveStateForUndo` and
`scriptedEffect.modifySegmentByLabelmap`, which `modifySelectedSegmentByLabelmap` forwards to
with the selected segment). Without a GUI, `EditorLogicModifier` does the same through Slicer's
`vtkSlicerSegmentEditorLogic`: the mask mode, overwrite mode and editable intensity range of
the segment editor node are honoured by Slicer's code, not re-implemented here.
"""

from __future__ import annotations

from typing import Protocol

import slicer


class SegmentModifier(Protocol):
    def saveStateForUndo(self) -> None: ...

    def modifySegmentByLabelmap(self, segmentationNode, segmentId: str, labelmap) -> None: ...


class EditorLogicModifier:
    """A SegmentModifier over `vtkSlicerSegmentEditorLogic` for a segment editor node (which names
    the segmentation, the source volume and the masking settings); `undo()` restores the last
    saved state as Ctrl+Z does in the Segment Editor."""

    def __init__(self, segmentEditorNode):
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(segmentEditorNode.GetScene())
        self.logic.SetSegmentEditorNode(segmentEditorNode)

    def saveStateForUndo(self) -> None:
        if not self.logic.SaveStateForUndo():
            raise RuntimeError("the segmentation state could not be saved for undo")

    def modifySegmentByLabelmap(self, segmentationNode, segmentId: str, labelmap) -> None:
        self.logic.ModifySegmentByLabelmap(
            segmentationNode, segmentId, labelmap, slicer.vtkSlicerSegmentEditorLogic.ModificationModeSet, True, False
        )

    def undo(self) -> None:
        self.logic.Undo()
