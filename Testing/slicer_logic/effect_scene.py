"""Scenes and a deterministic predictor for the VESSA effect's logic tests (no model, no GUI).

`ThresholdPredictor` stands in for `vessa.model.VolumeSegmenter`: its probability is 1 where
the image is above a level (a region the test knows exactly), so every voxel the pipeline writes
can be checked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import slicer

from vessa.io import Segment, Segmentation, Volume

SHAPE = (6, 20, 24)  # (k, j, i)
LEVEL = 500  # ThresholdPredictor: probability 1 where the image is above this


def rotation(axis, angle: float) -> np.ndarray:
    """Rotation matrix about `axis` by `angle` radians (Rodrigues)."""
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def box(shape, k: slice, j: slice, i: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[k, j, i] = True
    return mask


def bright_box_volume(
    seed: int, spacing=(0.8, 0.8, 3.0), origin=(10.0, -20.0, 5.0), direction=None, offset: int = 0
) -> Volume:
    """int16 MR-like volume (values 0..400) with a bright box (900) = the 'liver'."""
    values = np.random.default_rng(seed).integers(0, 400, size=SHAPE).astype(np.int16)
    values[box(SHAPE, slice(1, 5), slice(4 + offset, 14 + offset), slice(6, 18))] = 900
    return Volume(
        values,
        spacing=spacing,
        origin=origin,
        direction=rotation((1.0, 2.0, 3.0), 0.5) if direction is None else direction,
    )


@dataclass
class FakeResult:
    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    axis: int
    device: str


class ThresholdPredictor:
    """Deterministic stand-in for VolumeSegmenter: probability = image > LEVEL (float32 on the
    image's grid), slice confidence = a known ramp; records its calls. It reports progress
    1/5 ... 5/5; with `gate` (a semaphore) set, it waits for one release before each report
    (for progress and cancel tests). `error`: raised instead of a result."""

    def __init__(self, device: str = "cpu", error: BaseException | None = None, axis: int = 0):
        self.device = device
        self.error = error
        self.axis = axis
        self.slice_step = 1
        self.calls: list[dict] = []
        self.gate: threading.Semaphore | None = None
        self.entered = threading.Event()

    def segment(self, image: Volume, templates, text, progress=None, modality=""):
        self.calls.append({"text": text, "templates": templates, "modality": modality, "shape": image.shape,
                           "slice_step": self.slice_step})
        self.entered.set()
        if self.error is not None:
            raise self.error
        for step in range(1, 6):
            if self.gate is not None and not self.gate.acquire(timeout=10):
                raise TimeoutError("ThresholdPredictor: the test never released the gate")
            if progress:
                progress(step / 5)
        probability = (image.array > LEVEL).astype(np.float32)
        count = image.shape[self.axis]
        confidence = np.linspace(0.9, 0.1, count).astype(np.float32)
        return FakeResult(image.with_array(probability), confidence, 0.01, self.axis, self.device)


def loader_for(predictors: dict[str, ThresholdPredictor]):
    """A PredictorLoader-like callable returning the predictor for each device."""

    def load(checkpoint, device, allowUntrained=False, sliceStep=1):
        predictors[device].slice_step = sliceStep
        return predictors[device]

    return load


class EffectScene:
    """Target volume (oblique, anisotropic) + its segmentation (liver empty, spleen and tumour
    filled), two template volumes with 'Liver' segmentations, and a segment editor node."""

    def __init__(self, scene_io, target: Volume | None = None):
        self.scene_io = scene_io
        self.target = target or bright_box_volume(0)
        self.volumeNode = scene_io.volumeToNode(self.target, "target")
        segmentation = Segmentation.on_grid(self.target)
        segmentation.add("liver", np.zeros(SHAPE, bool), (0.8, 0.3, 0.2))
        segmentation.add("spleen", box(SHAPE, slice(0, 6), slice(15, 20), slice(0, 5)), (0.2, 0.3, 0.8))
        # overlaps the bright box (the liver to be found) by 2 x 4 x 3 voxels
        segmentation.add("tumour", box(SHAPE, slice(2, 4), slice(10, 18), slice(15, 22)), (0.9, 0.9, 0.1))
        self.segmentationNode = scene_io.segmentationToNode(segmentation, self.volumeNode, "target segmentation")
        self.ids = {self.name(i): i for i in self.segmentationNode.GetSegmentation().GetSegmentIDs()}
        self.templateNodes, self.templateSegmentations = [], []
        for number, offset in enumerate((1, -1)):
            image = bright_box_volume(
                number + 1,
                spacing=(0.7, 0.9, 2.5),
                origin=(0.0, 0.0, float(number)),
                direction=np.eye(3),
                offset=offset,
            )
            node = scene_io.volumeToNode(image, f"template{number + 1}")
            template = Segmentation.on_grid(image, [Segment("Liver", image.array > LEVEL, (1.0, 0.0, 0.0))])
            self.templateSegmentations.append(
                scene_io.segmentationToNode(template, node, f"template{number + 1} segmentation")
            )
            self.templateNodes.append(node)
        self.editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.editorNode.SetAndObserveSegmentationNode(self.segmentationNode)
        self.editorNode.SetAndObserveSourceVolumeNode(self.volumeNode)
        self.editorNode.SetSelectedSegmentID(self.ids["liver"])

    def name(self, segmentId: str) -> str:
        return self.segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()

    def mask(self, name: str) -> np.ndarray:
        """A segment as a bool array on the target volume's grid."""
        return self.scene_io.segmentMask(self.segmentationNode, self.ids[name], self.volumeNode)

    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.mask(name) for name in self.ids}

    def expected(self) -> np.ndarray:
        """What ThresholdPredictor finds in the target."""
        return self.target.array > LEVEL
