"""PreviewLogic: a finished job's result as a separate preview segmentation (as 'Fill between
slices' does), with threshold, opacity, the confidence overlay and slice navigation."""

from __future__ import annotations

import slicer

from .confidence_overlay import ConfidenceOverlay
from .node_removal import removeWithDisplayNodes
from .oriented_image import binaryLabelmap
from .segment_request import TaskResult
from .slice_navigator import SliceNavigator
from .template_collector import PREVIEW_ATTRIBUTE


class PreviewLogic:
    """Shows `results` next to `segmentationNode` without touching it.

    The preview node has one segment per result, with the id and colour of the segment it
    will be written into, on the segmentation's own reference geometry and parent transform.
    `remove()` takes every node it added out of the scene again.
    """

    def __init__(self, segmentationNode, results: list[TaskResult], threshold: float, opacity: float):
        if not results:
            raise ValueError("a preview needs at least one result")
        self.segmentationNode = segmentationNode
        self.results = {result.task.segmentId: result for result in results}
        self.threshold = threshold
        self.previewNode = self._createPreviewNode()
        self.overlay = ConfidenceOverlay(results, threshold)
        self.navigator = SliceNavigator(results, threshold)
        self.setOpacity(opacity)
        self._writeSegments()

    def segmentIds(self) -> list[str]:
        """Ids (in the user's segmentation) of the segments this preview would fill."""
        return list(self.results)

    def labelmap(self, segmentId: str):
        """The binary labelmap of one previewed segment at the current threshold."""
        return binaryLabelmap(self.results[segmentId].probability, self.threshold)

    def setThreshold(self, threshold: float) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold {threshold} must be between 0 and 1")
        self.threshold = threshold
        self._writeSegments()
        self.overlay.update(threshold)
        self.navigator = SliceNavigator(list(self.results.values()), threshold)

    def setOpacity(self, opacity: float) -> None:
        self.previewNode.GetDisplayNode().SetOpacity(min(max(opacity, 0.0), 1.0))

    def remove(self) -> None:
        """Remove the preview and overlay nodes; the user's segmentation was never modified."""
        self.overlay.remove()
        removeWithDisplayNodes(self.previewNode)

    def _createPreviewNode(self):
        source = self.segmentationNode
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{source.GetName()} VESSA preview")
        node.SetAttribute(PREVIEW_ATTRIBUTE, "1")
        node.SetHideFromEditors(True)
        node.CreateDefaultDisplayNodes()
        parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        node.GetSegmentation().SetConversionParameter(
            parameter, source.GetSegmentation().GetConversionParameter(parameter)
        )
        node.SetAndObserveTransformNodeID(source.GetTransformNodeID())
        for segmentId in self.results:
            segment = source.GetSegmentation().GetSegment(segmentId)
            node.GetSegmentation().AddEmptySegment(segmentId, segment.GetName(), segment.GetColor())
        return node

    def _writeSegments(self) -> None:
        for segmentId in self.results:
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                self.labelmap(segmentId),
                self.previewNode,
                segmentId,
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
            )
