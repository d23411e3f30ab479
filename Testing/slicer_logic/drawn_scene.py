"""A scene for the drawn-slice ("drawn" template source) tests: a bright ellipsoid blob in noise,
a segmentation whose segment "blob" the test draws on a few slices, and a segment editor node.

The completer is the real `vessa.priors` one; without SAM (`fast_completers`) a run takes a
couple of seconds on this small volume.
"""

from __future__ import annotations

import numpy as np
import slicer
from VESSASegmentLib.apply_logic import ApplyLogic
from VESSASegmentLib.auto_segment_job import JobStatus
from VESSASegmentLib.completer_loader import CompleterLoader
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.preview_logic import PreviewLogic
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.segment_modifier import EditorLogicModifier

from vessa.io import Segmentation, Volume
from vessa.priors import load_completer

SHAPE = (14, 26, 30)  # (k, j, i)
CENTRE, RADII = (7.0, 13.0, 15.0), (5.5, 8.5, 9.5)


def blob_volume(seed: int = 0, direction=None) -> tuple[Volume, np.ndarray]:
    """int16 image: the ellipsoid (about 220) in noise (about 100); and the ellipsoid's mask."""
    k, j, i = np.indices(SHAPE)
    truth = sum(((c - m) / r) ** 2 for c, m, r in zip((k, j, i), CENTRE, RADII, strict=True)) <= 1
    values = np.random.default_rng(seed).normal(100, 8, SHAPE) + 120 * truth
    volume = Volume(
        values.astype(np.int16), (0.9, 0.8, 2.0), (4.0, -6.0, 10.0), np.eye(3) if direction is None else direction
    )
    return volume, truth


def fast_completers() -> CompleterLoader:
    """The real completer without its SAM step (fast)."""
    return CompleterLoader(lambda sam_weights, device: load_completer(None, device=device))


def on_slices(mask: np.ndarray, axis: int, indices) -> np.ndarray:
    """`mask` kept on the slices `indices` along array axis `axis` only."""
    out = np.zeros_like(mask)
    index = [slice(None)] * 3
    index[axis] = list(indices)
    out[tuple(index)] = mask[tuple(index)]
    return out


class DrawnScene:
    """Source volume + segmentation ("blob" to complete, "box" another segment) + editor node."""

    def __init__(self, scene_io, volume: Volume | None = None, truth: np.ndarray | None = None):
        self.scene_io = scene_io
        if volume is None:
            volume, truth = blob_volume()
        self.volume, self.truth = volume, truth
        self.volumeNode = scene_io.volumeToNode(volume, "blob volume")
        segmentation = Segmentation.on_grid(volume)
        segmentation.add("blob", np.zeros(SHAPE, bool), (0.9, 0.4, 0.2))
        box = np.zeros(SHAPE, bool)
        box[:, :4, :4] = True
        segmentation.add("box", box, (0.2, 0.4, 0.9))
        self.segmentationNode = scene_io.segmentationToNode(segmentation, self.volumeNode, "segments")
        ids = self.segmentationNode.GetSegmentation().GetSegmentIDs()
        self.blobId, self.boxId = ids[0], ids[1]
        self.editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.editorNode.SetAndObserveSegmentationNode(self.segmentationNode)
        self.editorNode.SetAndObserveSourceVolumeNode(self.volumeNode)
        self.editorNode.SetSelectedSegmentID(self.blobId)

    def draw(self, mask: np.ndarray) -> None:
        """Set segment "blob" to `mask` (on the source grid), as painting would."""
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.astype(np.uint8), self.segmentationNode, self.blobId, self.volumeNode
        )

    def draw_slices(self, axis: int, indices) -> np.ndarray:
        """Draw the blob's true outline on `indices` along `axis`; the drawn mask."""
        drawn = on_slices(self.truth, axis, indices)
        self.draw(drawn)
        return drawn

    def mask(self, segmentId: str | None = None) -> np.ndarray:
        return self.scene_io.segmentMask(self.segmentationNode, segmentId or self.blobId, self.volumeNode)

    def run(self, logic: SegmentLogic, **parameters):
        """Request and run a drawn-slice completion of "blob" to the end; the job's final state."""
        settings = Parameters(templateSource="drawn", device="cpu", **parameters)
        request = logic.request(settings, self.volumeNode, self.segmentationNode, [self.blobId])
        state = logic.start(settings, request).wait(300)
        assert state.status == JobStatus.FINISHED, state.error
        return state

    def apply(self, state) -> EditorLogicModifier:
        """Preview and Apply the result through Slicer's segment editor logic; the modifier (for undo)."""
        modifier = EditorLogicModifier(self.editorNode)
        ApplyLogic(modifier).apply(PreviewLogic(self.segmentationNode, state.results, 0.5, 0.6))
        return modifier
