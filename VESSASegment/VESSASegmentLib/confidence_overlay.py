"""ConfidenceOverlay: the model's per-slice confidence painted on the preview, as a slice-view layer."""

from __future__ import annotations

import numpy as np
import slicer

from . import scene_io
from .node_removal import removeWithDisplayNodes
from .segment_request import TaskResult

OVERLAY_OPACITY = 0.5
_RED, _YELLOW, _GREEN = np.array([0.9, 0.1, 0.1]), np.array([1.0, 0.85, 0.1]), np.array([0.1, 0.75, 0.2])


def sliceConfidenceVolume(result: TaskResult) -> np.ndarray:
    """The result's slice confidences broadcast over its source grid (k, j, i)."""
    shape = [1, 1, 1]
    shape[result.axis] = len(result.sliceConfidence)
    confidence = np.asarray(result.sliceConfidence, dtype=np.float32).reshape(shape)
    return np.broadcast_to(confidence, result.sourceProbability.shape)


class ConfidenceOverlay:
    """A uint8 volume on the source grid: on the voxels the preview marks (probability >=
    threshold), the confidence of their slice in percent (1..100); 0 elsewhere (transparent).

    Colours run from red (0 %, check this slice) over yellow to green (100 %). `show(True)`
    puts it in the foreground of every slice view and `show(False)` puts back what was there.
    """

    def __init__(self, results: list[TaskResult], threshold: float):
        self.results = results
        grid = results[0].sourceProbability
        self.volumeNode = scene_io.volumeToNode(grid.with_array(self.values(threshold)), "VESSA slice confidence")
        self.volumeNode.SetHideFromEditors(True)
        self.colorNode = self._createColors()
        display = self.volumeNode.GetDisplayNode()
        display.SetAndObserveColorNodeID(self.colorNode.GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0, 100)
        display.ApplyThresholdOn()
        display.SetLowerThreshold(1)
        display.SetUpperThreshold(100)
        self._savedLayers: dict[str, tuple[str | None, float]] = {}

    def values(self, threshold: float) -> np.ndarray:
        """Overlay voxels for `threshold` (the maximum over the results where they overlap)."""
        overlay = np.zeros(self.results[0].sourceProbability.shape, np.uint8)
        for result in self.results:
            percent = np.clip(np.rint(sliceConfidenceVolume(result) * 100), 1, 100).astype(np.uint8)
            inside = result.sourceProbability.array >= threshold
            overlay[inside] = np.maximum(overlay[inside], percent[inside])
        return overlay

    def update(self, threshold: float) -> None:
        slicer.util.updateVolumeFromArray(self.volumeNode, self.values(threshold))

    def show(self, visible: bool) -> None:
        """Show in (or restore) the foreground layer of all slice views."""
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if visible and composite.GetID() not in self._savedLayers:
                self._savedLayers[composite.GetID()] = (
                    composite.GetForegroundVolumeID(),
                    composite.GetForegroundOpacity(),
                )
                composite.SetForegroundVolumeID(self.volumeNode.GetID())
                composite.SetForegroundOpacity(OVERLAY_OPACITY)
            elif not visible and composite.GetID() in self._savedLayers:
                volumeId, opacity = self._savedLayers.pop(composite.GetID())
                composite.SetForegroundVolumeID(volumeId)
                composite.SetForegroundOpacity(opacity)

    def remove(self) -> None:
        self.show(False)
        removeWithDisplayNodes(self.volumeNode)
        slicer.mrmlScene.RemoveNode(self.colorNode)

    @staticmethod
    def _createColors():
        colors = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", "VESSA confidence colors")
        colors.SetHideFromEditors(True)
        colors.SetTypeToUser()
        colors.SetNumberOfColors(256)
        for index in range(256):
            fraction = index / 255
            if fraction < 0.5:
                rgb = _RED + (_YELLOW - _RED) * fraction * 2
            else:
                rgb = _YELLOW + (_GREEN - _YELLOW) * (fraction - 0.5) * 2
            colors.SetColor(index, f"{round(fraction * 100)} %", *rgb, 1.0)
        return colors
