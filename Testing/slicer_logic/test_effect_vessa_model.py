"""The VESSA effect's logic with the real `vessa.model.VolumeSegmenter` (headless scene).

No trained checkpoint exists yet, so the model is randomly initialised (allowUntrained, the
explicit testing-only path) and small (Hiera "half_tiny" at 256 px): the test checks the whole
pipeline, geometry, preview, apply and cancel with the real model, not segmentation quality.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import slicer
from effect_scene import SHAPE, EffectScene
from VESSASegmentLib import scene_io
from VESSASegmentLib.apply_logic import ApplyLogic
from VESSASegmentLib.auto_segment_job import JobStatus
from VESSASegmentLib.oriented_image import arrayFromOrientedImage
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.predictor import PredictorLoader
from VESSASegmentLib.preview_logic import PreviewLogic
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.segment_modifier import EditorLogicModifier

torch = pytest.importorskip("torch")
from vessa.model.assistant import TemplateAssistant  # noqa: E402
from vessa.model.config import ModelConfig  # noqa: E402
from vessa.model.volume_segmenter import VolumeSegmenter  # noqa: E402

UNTRAINED = Parameters(device="cpu", allowUntrained=True)


@pytest.fixture(scope="module")
def loader() -> PredictorLoader:
    """Builds the small untrained VolumeSegmenter once for the module, as load_segmenter would."""

    def load(checkpoint, device, allow_untrained):
        assert checkpoint is None and allow_untrained  # what the effect passes without a checkpoint
        torch.manual_seed(0)
        assistant = TemplateAssistant(ModelConfig("half_tiny", image_size=256))
        return VolumeSegmenter(assistant, device=device, batch_size=2)  # small batches: frequent progress

    return PredictorLoader(load)


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_real_model_through_preview_and_apply(slicer_scene, loader):
    scene = EffectScene(scene_io)
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteNone)
    nodes, before = slicer.mrmlScene.GetNumberOfNodes(), scene.masks()
    logic = SegmentLogic(loader=loader)
    request = logic.request(UNTRAINED, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    state = logic.start(UNTRAINED, request).wait(300)
    assert state.status == JobStatus.FINISHED, state.error
    assert state.fraction == 1.0

    result = state.results[0]
    probability = result.sourceProbability
    assert probability.same_grid(scene.target, atol=1e-9)  # oblique, anisotropic: the exact input grid
    assert probability.array.dtype == np.float32
    assert np.all(np.isfinite(probability.array)) and 0 <= probability.array.min() <= probability.array.max() <= 1
    assert result.axis == 0  # 0.8 x 0.8 mm in-plane, 3 mm slices: cut into its acquired slices
    assert result.sliceConfidence.shape == (SHAPE[0],) and np.all(np.isfinite(result.sliceConfidence))
    # the segmentation shares the volume's grid: the resampled copy is the model's output exactly
    np.testing.assert_allclose(arrayFromOrientedImage(result.probability), probability.array, atol=1e-6)

    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    expected = probability.array >= 0.5
    np.testing.assert_array_equal(arrayFromOrientedImage(preview.labelmap(scene.ids["liver"])) != 0, expected)
    stop = preview.navigator.next()
    assert 0 <= stop.index < SHAPE[0]
    ApplyLogic(EditorLogicModifier(scene.editorNode)).apply(preview)
    after = scene.masks()
    np.testing.assert_array_equal(after["liver"], expected)
    for name in ("spleen", "tumour"):
        np.testing.assert_array_equal(after[name], before[name])
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_cancel_stops_the_real_model(slicer_scene, loader):
    """Cancel once the model has reported progress: its next report stops it mid-volume."""
    scene = EffectScene(scene_io)
    logic = SegmentLogic(loader=loader)
    request = logic.request(UNTRAINED, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    loader("", "cpu", True).cache.clear()  # encode everything again: a re-run would be over too soon
    job = logic.start(UNTRAINED, request)
    deadline = time.monotonic() + 300
    while job.state().fraction == 0.0 and not job.state().done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 0.0 < job.state().fraction < 1.0
    job.cancel()
    state = job.wait(300)
    assert state.status == JobStatus.CANCELLED and state.results == []
    assert state.fraction < 1.0
    assert not scene.mask("liver").any()


def test_a_rerun_reuses_the_encoder_features(slicer_scene, loader):
    """Auto-segment twice (as after Cancel): the second run encodes nothing and gives the same map."""
    scene = EffectScene(scene_io)
    logic = SegmentLogic(loader=loader)
    cache = loader("", "cpu", True).cache
    cache.clear()
    runs = []
    for _ in range(2):
        request = logic.request(UNTRAINED, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
        misses = cache.misses
        state = logic.start(UNTRAINED, request).wait(300)
        assert state.status == JobStatus.FINISHED, state.error
        runs.append((cache.misses - misses, state.results[0].sourceProbability.array))
    assert runs[0][0] >= SHAPE[0] and runs[1][0] == 0
    np.testing.assert_array_equal(runs[1][1], runs[0][1])
