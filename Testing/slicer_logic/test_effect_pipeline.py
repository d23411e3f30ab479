"""VESSA effect logic in a real headless scene: scene -> templates -> job -> preview -> apply.

The model is `ThresholdPredictor` (probability 1 exactly where the target is bright), so every
written voxel is known; Apply goes through Slicer's own segment editor logic, as in the GUI.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import slicer
import vtk
from effect_scene import (
    LEVEL,
    SHAPE,
    EffectScene,
    ThresholdPredictor,
    bright_box_volume,
    loader_for,
    rotation,
)
from scipy.ndimage import map_coordinates
from VESSASegmentLib import scene_io
from VESSASegmentLib.apply_logic import ApplyLogic
from VESSASegmentLib.auto_segment_job import CPU_FALLBACK_MESSAGE, JobStatus
from VESSASegmentLib.oriented_image import arrayFromOrientedImage
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.preview_logic import PreviewLogic
from VESSASegmentLib.segment_logic import SegmentLogic
from VESSASegmentLib.segment_modifier import EditorLogicModifier

from vessa.errors import GeometryError, InputError
from vessa.io import Volume


@pytest.fixture
def scene(slicer_scene) -> EffectScene:
    return EffectScene(scene_io)


@pytest.fixture
def predictor() -> ThresholdPredictor:
    return ThresholdPredictor()


def run_job(scene: EffectScene, predictor, segmentNames=("liver",), **parameters):
    """Prepare and run a job to the end; its final state."""
    logic = SegmentLogic(loader=loader_for({"cpu": predictor, "cuda": predictor}))
    settings = Parameters(checkpoint="test", device="cpu", **parameters)
    request = logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids[n] for n in segmentNames])
    state = logic.start(settings, request).wait(30)
    assert state.status == JobStatus.FINISHED, state.error
    return state


def preview_and_apply(scene: EffectScene, state, threshold=0.5):
    preview = PreviewLogic(scene.segmentationNode, state.results, threshold, 0.6)
    modifier = EditorLogicModifier(scene.editorNode)
    written = ApplyLogic(modifier).apply(preview)
    return written, modifier


def scene_snapshot(scene: EffectScene) -> tuple[int, dict[str, np.ndarray]]:
    return slicer.mrmlScene.GetNumberOfNodes(), scene.masks()


def test_apply_writes_only_the_selected_segment(scene, predictor):
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteNone)
    nodes, before = scene_snapshot(scene)
    state = run_job(scene, predictor)
    written, _ = preview_and_apply(scene, state)
    after = scene.masks()
    assert written == [scene.ids["liver"]]
    np.testing.assert_array_equal(after["liver"], scene.expected())
    for name in ("spleen", "tumour"):
        np.testing.assert_array_equal(after[name], before[name])  # bit-exact, overlap kept
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes  # preview and overlay removed
    call = predictor.calls[0]
    assert call["text"] == "liver" and call["shape"] == SHAPE and call["slice_step"] == 1
    assert sorted(t.case_id for t in call["templates"]) == ["template1", "template2"]


def test_fast_pass_reaches_the_segmenter(scene, predictor):
    run_job(scene, predictor, fastPass=True)
    assert predictor.calls[0]["slice_step"] == 2


def test_overwrite_all_segments_takes_the_overlap_from_other_segments(scene, predictor):
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteAllSegments)
    before = scene.masks()
    written, _ = preview_and_apply(scene, run_job(scene, predictor))
    after = scene.masks()
    np.testing.assert_array_equal(after["liver"], scene.expected())
    np.testing.assert_array_equal(after["tumour"], before["tumour"] & ~scene.expected())
    assert (before["tumour"] & scene.expected()).sum() == 2 * 4 * 3  # the overlap really existed
    np.testing.assert_array_equal(after["spleen"], before["spleen"])


def test_typed_description_is_the_text_prompt(scene, predictor):
    run_job(scene, predictor, text="  the whole liver  ")
    assert predictor.calls[0]["text"] == "the whole liver"


def test_mask_inside_single_segment_is_respected(scene, predictor):
    """'Editable area: inside tumour': only liver voxels inside the tumour are written."""
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteNone)
    scene.editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    scene.editorNode.SetMaskSegmentID(scene.ids["tumour"])
    before = scene.masks()
    preview_and_apply(scene, run_job(scene, predictor))
    after = scene.masks()
    np.testing.assert_array_equal(after["liver"], scene.expected() & before["tumour"])
    np.testing.assert_array_equal(after["tumour"], before["tumour"])


def test_mask_outside_all_segments_keeps_existing_voxels_out(scene, predictor):
    scene.editorNode.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    before = scene.masks()
    preview_and_apply(scene, run_job(scene, predictor))
    after = scene.masks()
    np.testing.assert_array_equal(after["liver"], scene.expected() & ~before["tumour"] & ~before["spleen"])
    np.testing.assert_array_equal(after["tumour"], before["tumour"])


def test_editable_intensity_range_is_respected(scene, predictor):
    """Only voxels whose source intensity is in the editable range are written."""
    target = scene.target.array.copy()
    target[2] = np.where(target[2] > LEVEL, 2000, target[2])  # one slice of the box brighter
    slicer.util.updateVolumeFromArray(scene.volumeNode, target)
    scene.target = scene.target.with_array(target)
    scene.editorNode.SetSourceVolumeIntensityMask(True)
    scene.editorNode.SetSourceVolumeIntensityMaskRange(LEVEL, 1000)
    preview_and_apply(scene, run_job(scene, predictor))
    expected = (target > LEVEL) & (target <= 1000)
    assert expected.sum() < scene.expected().sum()
    np.testing.assert_array_equal(scene.mask("liver"), expected)


def test_undo_restores_the_previous_segment(scene, predictor):
    previous = np.zeros(SHAPE, np.uint8)
    previous[0, 0:3, 0:3] = 1  # the liver already had some (wrong) voxels
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        previous, scene.segmentationNode, scene.ids["liver"], scene.volumeNode
    )
    before = scene.masks()
    _, modifier = preview_and_apply(scene, run_job(scene, predictor))
    assert not np.array_equal(scene.mask("liver"), before["liver"])
    modifier.undo()
    for name, mask in scene.masks().items():
        np.testing.assert_array_equal(mask, before[name])


def test_cancelling_the_preview_leaves_the_scene_unchanged(scene, predictor):
    nodes, before = scene_snapshot(scene)
    state = run_job(scene, predictor)
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    preview.setThreshold(0.3)
    preview.overlay.show(True)
    assert slicer.mrmlScene.GetNumberOfNodes() > nodes
    preview.remove()
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes
    for name, mask in scene.masks().items():
        np.testing.assert_array_equal(mask, before[name])


def test_cancelling_the_job_stops_the_model_and_changes_nothing(scene, predictor):
    predictor.gate = threading.Semaphore(0)
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="test", device="cpu")
    nodes, before = scene_snapshot(scene)
    job = logic.start(settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]]))
    assert predictor.entered.wait(5)
    assert job.state().status == JobStatus.RUNNING
    job.cancel()
    predictor.gate.release()  # the model's next progress report stops it
    state = job.wait(10)
    assert state.status == JobStatus.CANCELLED and state.results == [] and state.fraction == 0.0
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes
    for name, mask in scene.masks().items():
        np.testing.assert_array_equal(mask, before[name])


def test_progress_follows_the_model(scene, predictor):
    """Each progress report of the model moves the job's fraction; the GUI polls it."""
    predictor.gate = threading.Semaphore(0)
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="test", device="cpu")
    job = logic.start(settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]]))
    assert predictor.entered.wait(5)
    seen = []
    for step in range(1, 5):
        predictor.gate.release()
        deadline = time.monotonic() + 5
        while job.state().fraction < step / 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        state = job.state()
        seen.append((round(state.fraction, 3), state.status, state.message))
    assert seen == [(step / 5, JobStatus.RUNNING, "segmenting 'liver'") for step in range(1, 5)]
    predictor.gate.release()
    state = job.wait(10)
    assert (state.status, state.fraction, state.message) == (JobStatus.FINISHED, 1.0, "done")


def test_oblique_anisotropic_result_keeps_geometry(scene, predictor):
    """The probability is on the source grid; the preview on the segmentation's geometry."""
    state = run_job(scene, predictor)
    result = state.results[0]
    assert result.sourceProbability.same_grid(scene.target, atol=1e-9)
    np.testing.assert_array_equal(arrayFromOrientedImage(result.probability), scene.expected().astype(np.float32))
    image_to_world = vtk.vtkMatrix4x4()
    result.probability.GetImageToWorldMatrix(image_to_world)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(image_to_world), scene.target.ijk_to_ras(), atol=1e-9)


def test_segmentation_geometry_differing_from_the_volume(slicer_scene, predictor):
    """Segmentation on another reference grid, 2x finer in every direction, fine voxel centres a
    quarter of a coarse voxel off the coarse ones: the written segment is the model's result
    linearly interpolated at the fine centres and thresholded at 0.5 (computed here with scipy)."""
    target = bright_box_volume(0, direction=np.eye(3))
    scene = EffectScene(scene_io, target)
    finer = Volume(np.zeros((12, 40, 48), np.uint8), spacing=(0.4, 0.4, 1.5), origin=target.origin - [0.2, 0.2, 0.75])
    finer_node = scene_io.volumeToNode(finer, "finer grid")
    scene.segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(finer_node)
    state = run_job(scene, predictor)
    assert arrayFromOrientedImage(state.results[0].probability).shape == finer.shape
    preview_and_apply(scene, state)
    on_fine = scene_io.segmentMask(scene.segmentationNode, scene.ids["liver"], finer_node)
    coarse_index = np.indices(finer.shape) / 2 - 0.25  # fine voxel m sits at coarse index m/2 - 1/4
    interpolated = map_coordinates(scene.expected().astype(float), coarse_index, order=1, cval=0.0)
    np.testing.assert_array_equal(on_fine, interpolated >= 0.5)
    assert on_fine.sum() == 8 * scene.expected().sum() - 8  # the box, doubled, minus its 8 corner voxels


def test_parent_transform_of_the_segmentation_is_followed(scene, predictor):
    """Segmentation under a translation: the result is written where the bright box is in world space."""
    shift = scene.target.direction @ np.array([0.0, 0.0, 3.0 * 2])  # two slices along k (LPS)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = np.diag([-1, -1, 1]) @ shift  # LPS -> RAS
    slicer.util.updateTransformMatrixFromArray(transform, matrix)
    scene.segmentationNode.SetAndObserveTransformNodeID(transform.GetID())
    state = run_job(scene, predictor)
    probability = arrayFromOrientedImage(state.results[0].probability)
    expected = np.zeros(SHAPE, np.float32)
    expected[:-2] = scene.expected()[2:]  # world point p is segmentation point p - shift
    np.testing.assert_allclose(probability, expected, atol=1e-4)


def move_source(scene: EffectScene, toWorld: np.ndarray):
    """Put the source volume (not its segmentation) under a linear transform."""
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    slicer.util.updateTransformMatrixFromArray(transform, toWorld)
    scene.volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    return transform


def two_slices_along_k(scene: EffectScene) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = np.diag([-1, -1, 1]) @ scene.target.direction @ np.array([0.0, 0.0, 3.0 * 2])  # LPS -> RAS
    return matrix


def test_a_transformed_source_volume_is_followed_by_preview_overlay_and_navigation(scene, predictor):
    """The source volume is moved two slices along k in the world, its segmentation is not: the
    preview, the confidence overlay and 'Next slice to check' all show the box where it is now."""
    toWorld = two_slices_along_k(scene)
    move_source(scene, toWorld)
    state = run_job(scene, predictor)
    expected = np.zeros(SHAPE, np.float32)
    expected[2:] = scene.expected()[:-2]  # segmentation voxel k sees source voxel k - 2
    np.testing.assert_allclose(arrayFromOrientedImage(state.results[0].probability), expected, atol=1e-4)
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    world = toWorld @ scene.target.ijk_to_ras()
    np.testing.assert_allclose(scene_io.nodeIjkToRas(preview.overlay.volumeNode), world, atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(preview.overlay.volumeNode) > 0, scene.expected())
    stop = preview.navigator.next()
    centre = np.argwhere(scene.expected()[4]).mean(axis=0)  # (j, i) of the box in source slice 4
    np.testing.assert_allclose(stop.ras, (world @ [centre[1], centre[0], 4, 1.0])[:3], atol=1e-9)
    preview.remove()


def test_a_rotated_source_volume_places_overlay_and_navigation_in_the_world(scene, predictor):
    toWorld = np.eye(4)
    toWorld[:3, :3] = rotation((0.0, 1.0, 1.0), 0.4)
    toWorld[:3, 3] = [4.0, -6.0, 9.0]
    move_source(scene, toWorld)
    preview = PreviewLogic(scene.segmentationNode, run_job(scene, predictor).results, 0.5, 0.6)
    world = toWorld @ scene.target.ijk_to_ras()
    np.testing.assert_allclose(scene_io.nodeIjkToRas(preview.overlay.volumeNode), world, atol=1e-9)
    stop = preview.navigator.next()
    centre = np.argwhere(scene.expected()[4]).mean(axis=0)
    np.testing.assert_allclose(stop.ras, (world @ [centre[1], centre[0], 4, 1.0])[:3], atol=1e-9)
    preview.remove()


def test_the_source_transform_is_copied_when_the_run_is_requested(scene, predictor):
    """The worker uses the transform as it was at the click, not a live VTK transform the user
    may change (here: moves the volume back) while the model runs."""
    transform = move_source(scene, two_slices_along_k(scene))
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="test", device="cpu")
    request = logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    slicer.util.updateTransformMatrixFromArray(transform, np.eye(4))
    state = logic.start(settings, request).wait(30)
    expected = np.zeros(SHAPE, np.float32)
    expected[2:] = scene.expected()[:-2]
    np.testing.assert_allclose(arrayFromOrientedImage(state.results[0].probability), expected, atol=1e-4)


def test_a_non_linear_source_transform_is_refused_with_a_message(scene):
    grid = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    grid.SetAndObserveTransformFromParent(vtk.vtkThinPlateSplineTransform())
    scene.volumeNode.SetAndObserveTransformNodeID(grid.GetID())
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(GeometryError, match="from 'target' to 'target segmentation' is not linear; harden it"):
        logic.request(Parameters(checkpoint="x"), scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])


def test_threshold_changes_preview_and_overlay(scene):
    graded = ThresholdPredictor()
    state = run_job(scene, graded)
    result = state.results[0]
    arrayFromOrientedImage(result.probability)[:] *= np.linspace(0.2, 1.0, SHAPE[0]).reshape(-1, 1, 1)
    result.sourceProbability.array[:] = arrayFromOrientedImage(result.probability)
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    segmentId = scene.ids["liver"]

    def preview_mask():
        return scene_io.segmentMask(preview.previewNode, segmentId, scene.volumeNode)

    high = preview_mask()
    preview.setThreshold(0.25)
    low = preview_mask()
    assert high.sum() < low.sum() and (high <= low).all()
    np.testing.assert_array_equal(low, arrayFromOrientedImage(result.probability) >= 0.25)
    overlay = slicer.util.arrayFromVolume(preview.overlay.volumeNode)
    np.testing.assert_array_equal(overlay > 0, low)
    # ramp 0.9 -> 0.1 over the 6 slices, in percent
    assert overlay[1][low[1]].max() == round(100 * np.linspace(0.9, 0.1, SHAPE[0])[1])
    preview.setOpacity(0.25)
    assert preview.previewNode.GetDisplayNode().GetOpacity() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="threshold"):
        preview.setThreshold(1.0)
    preview.remove()


def test_overlay_layers_are_restored(scene, predictor):
    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetForegroundVolumeID(scene.templateNodes[0].GetID())
    composite.SetForegroundOpacity(0.3)
    preview = PreviewLogic(scene.segmentationNode, run_job(scene, predictor).results, 0.5, 0.6)
    preview.overlay.show(True)
    assert composite.GetForegroundVolumeID() == preview.overlay.volumeNode.GetID()
    preview.remove()
    assert composite.GetForegroundVolumeID() == scene.templateNodes[0].GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.3)


def test_next_slice_goes_from_least_to_most_confident(scene, predictor):
    preview = PreviewLogic(scene.segmentationNode, run_job(scene, predictor).results, 0.5, 0.6)
    stops = [preview.navigator.next() for _ in range(5)]
    # the box fills slices 1..4; the ramp falls with k, so 4 is least confident
    assert [s.index for s in stops] == [4, 3, 2, 1, 4]
    assert stops[0].confidence == pytest.approx(np.linspace(0.9, 0.1, SHAPE[0])[4])
    centre = np.argwhere(scene.expected()[4]).mean(axis=0)  # (j, i) of the box in slice 4
    ijk = np.array([centre[1], centre[0], 4, 1.0])
    np.testing.assert_allclose(stops[0].ras, (scene.target.ijk_to_ras() @ ijk)[:3], atol=1e-9)
    preview.remove()


def test_next_slice_along_another_axis(scene):
    """VolumeSegmenter may cut along j or i; the navigator follows the result's axis."""
    predictor = ThresholdPredictor(axis=2)
    preview = PreviewLogic(scene.segmentationNode, run_job(scene, predictor).results, 0.5, 0.6)
    stop = preview.navigator.next()
    assert stop.axis == 2 and 6 <= stop.index < 18  # inside the box's i range
    assert stop.index == 17  # ramp falls with i: the last box column is least confident
    preview.remove()


def test_batch_fills_every_empty_segment_with_templates(scene, predictor):
    segmentation = scene.segmentationNode.GetSegmentation()
    kidney = segmentation.AddEmptySegment("", "kidney")  # no template anywhere
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteNone)
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="test", device="cpu")
    before = scene.masks()
    assert logic.emptySegmentIds(scene.segmentationNode) == [scene.ids["liver"], kidney]
    request, skipped = logic.batchRequest(settings, scene.volumeNode, scene.segmentationNode)
    assert [t.segmentName for t in request.tasks] == ["liver"]
    assert len(skipped) == 1 and skipped[0].startswith("kidney: no template for 'kidney'")
    state = logic.start(settings, request).wait(30)
    written, _ = preview_and_apply(scene, state)
    assert written == [scene.ids["liver"]]
    np.testing.assert_array_equal(scene.mask("liver"), scene.expected())
    np.testing.assert_array_equal(scene.mask("tumour"), before["tumour"])


def test_batch_with_two_structures_applies_both_in_one_undo_step(scene, predictor):
    segmentation = scene.segmentationNode.GetSegmentation()
    second = segmentation.AddEmptySegment("", "LIVER copy")
    for node, template_segmentation in zip(scene.templateNodes, scene.templateSegmentations, strict=True):
        segmentId = template_segmentation.GetSegmentation().AddEmptySegment("", "liver_copy")
        mask = slicer.util.arrayFromVolume(node) > LEVEL
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), template_segmentation, segmentId, node)
    scene.editorNode.SetOverwriteMode(scene.editorNode.OverwriteNone)
    logic = SegmentLogic(loader=loader_for({"cpu": predictor}))
    settings = Parameters(checkpoint="test", device="cpu")
    before = scene.masks()
    request, skipped = logic.batchRequest(settings, scene.volumeNode, scene.segmentationNode)
    assert skipped == [] and len(request.tasks) == 2
    state = logic.start(settings, request).wait(30)
    assert [r.task.segmentName for r in state.results] == ["liver", "LIVER copy"]
    written, modifier = preview_and_apply(scene, state)
    assert written == [scene.ids["liver"], second]
    copy = scene_io.segmentMask(scene.segmentationNode, second, scene.volumeNode)
    np.testing.assert_array_equal(copy, scene.expected())
    modifier.undo()
    np.testing.assert_array_equal(scene.mask("liver"), before["liver"])
    assert not scene_io.segmentMask(scene.segmentationNode, second, scene.volumeNode).any()


# ---- warnings ------------------------------------------------------------------------------------
def test_a_constant_image_and_an_empty_result_are_warned(slicer_scene, predictor):
    scene = EffectScene(scene_io, bright_box_volume(0).with_array(np.zeros(SHAPE, np.int16)))
    state = run_job(scene, predictor)
    assert [w for w in state.warnings if w.startswith("the image is constant (every voxel is 0)")]
    assert "the result is empty: no voxel of 'liver' reaches probability 0.5 (the model did not find it)" in (
        state.warnings)
    assert not [w for w in run_job(EffectScene(scene_io), predictor).warnings if "constant" in w or "empty" in w]


def test_fast_pass_over_a_structure_thinner_than_its_step_is_warned(scene, predictor):
    for node, segmentation in zip(scene.templateNodes, scene.templateSegmentations, strict=True):
        mask = slicer.util.arrayFromVolume(node) > LEVEL
        mask[2:] = False  # one slice of the liver is left
        segmentId = segmentation.GetSegmentation().GetSegmentIDs()[0]
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation, segmentId, node)
    assert [w for w in run_job(scene, predictor, fastPass=True).warnings
            if w.startswith("a slice step of 2 exceeds the structure's extent")]
    assert not [w for w in run_job(scene, predictor).warnings if "slice step" in w]


# ---- bad input ---------------------------------------------------------------------------------
def test_no_source_volume(scene):
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(InputError, match="no source volume"):
        logic.request(Parameters(checkpoint="x"), None, scene.segmentationNode, [scene.ids["liver"]])


def test_no_selected_segment(scene):
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(InputError, match="no segment selected"):
        logic.request(Parameters(checkpoint="x"), scene.volumeNode, scene.segmentationNode, [""])


def test_no_templates_lists_the_names_there_are(scene):
    scene.segmentationNode.GetSegmentation().AddEmptySegment("kid", "kidney")
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(InputError, match=r"no template for 'kidney'.*segments on other volumes: Liver$"):
        logic.request(Parameters(checkpoint="x"), scene.volumeNode, scene.segmentationNode, ["kid"])


def test_invalid_parameters_are_refused_before_any_work(scene):
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(InputError, match="no model checkpoint"):
        logic.request(Parameters(), scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])


def test_segmentation_without_reference_geometry(scene):
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    scene.segmentationNode.GetSegmentation().SetConversionParameter(parameter, "")
    logic = SegmentLogic(loader=loader_for({}))
    with pytest.raises(GeometryError, match="select a source volume"):
        logic.request(Parameters(checkpoint="x"), scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])


def test_model_error_fails_the_job_with_its_message(scene):
    failing = ThresholdPredictor(error=InputError("text prompt '': must be a non-empty string"))
    logic = SegmentLogic(loader=loader_for({"cpu": failing}))
    settings = Parameters(checkpoint="x", device="cpu")
    state = logic.start(
        settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    ).wait(10)
    assert state.status == JobStatus.FAILED
    assert state.error == "text prompt '': must be a non-empty string"


def test_cuda_out_of_memory_falls_back_to_the_cpu_for_that_segment_only(scene):
    torch = pytest.importorskip("torch")
    gpu = ThresholdPredictor(device="cuda", error=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    cpu = ThresholdPredictor(device="cpu")
    logic = SegmentLogic(loader=loader_for({"cuda": gpu, "cpu": cpu}))
    settings = Parameters(checkpoint="x", device="cuda")
    state = logic.start(
        settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    ).wait(10)
    assert state.status == JobStatus.FINISHED
    assert CPU_FALLBACK_MESSAGE in state.warnings
    assert len(gpu.calls) == 1 and len(cpu.calls) == 1
    np.testing.assert_array_equal(state.results[0].sourceProbability.array, scene.expected())
    gpu.error = None  # memory is free again: the next run is on the GPU
    state = logic.start(
        settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    ).wait(10)
    assert len(gpu.calls) == 2 and len(cpu.calls) == 1 and CPU_FALLBACK_MESSAGE not in state.warnings


def test_fallback_inside_the_model_is_reported_on_every_run(scene):
    """VolumeSegmenter runs a call on the CPU after OOM at batch 1 (its result says so) and
    starts the next call on the GPU again; each run that fell back tells the user."""

    class FallsBackToCpu(ThresholdPredictor):
        def segment(self, *args, **kwargs):
            result = super().segment(*args, **kwargs)
            return dataclasses.replace(result, device="cpu")

    gpu = FallsBackToCpu(device="cuda")
    logic = SegmentLogic(loader=loader_for({"cuda": gpu}))
    settings = Parameters(checkpoint="x", device="cuda")
    for _ in range(2):
        request = logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
        state = logic.start(settings, request).wait(10)
        assert state.status == JobStatus.FINISHED and CPU_FALLBACK_MESSAGE in state.warnings
    assert gpu.device == "cuda" and len(gpu.calls) == 2


def test_a_gpu_result_is_not_reported_as_a_fallback(scene):
    logic = SegmentLogic(loader=loader_for({"cuda": ThresholdPredictor(device="cuda")}))
    settings = Parameters(checkpoint="x", device="cuda")
    request = logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    state = logic.start(settings, request).wait(10)
    assert state.status == JobStatus.FINISHED and CPU_FALLBACK_MESSAGE not in state.warnings


def test_other_errors_are_one_line_messages(scene):
    failing = ThresholdPredictor(error=KeyError("boom"))
    logic = SegmentLogic(loader=loader_for({"cpu": failing}))
    settings = Parameters(checkpoint="x", device="cpu")
    state = logic.start(
        settings, logic.request(settings, scene.volumeNode, scene.segmentationNode, [scene.ids["liver"]])
    ).wait(10)
    assert state.status == JobStatus.FAILED
    assert state.error.startswith("unexpected error (KeyError") and "\n" not in state.error


def test_apply_after_the_segment_was_deleted(scene, predictor):
    state = run_job(scene, predictor)
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    scene.segmentationNode.GetSegmentation().RemoveSegment(scene.ids["liver"])
    with pytest.raises(InputError, match="deleted after the preview"):
        ApplyLogic(EditorLogicModifier(scene.editorNode)).apply(preview)
    preview.remove()
