"""Few-slice completion end to end on synthetic volumes (vessa.priors.completion), without SAM
(the SAM step is tested in test_sam_refine.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapes import blob_volume, dice, drawn_on, ellipsoid

from vessa.errors import InputError
from vessa.io import Volume
from vessa.priors.completion import CompletionConfig, SliceCompleter
from vessa.priors.drawn_slices import find_drawn_slices
from vessa.priors.fusion import FusionConfig, Gate, SliceParts

SHAPE = (36, 44, 40)
TRUTH = ellipsoid(SHAPE, (18, 22, 20), (13, 14, 12), drift=(0.3, 0.0))
IMAGE = blob_volume(TRUTH)
COMPLETER = SliceCompleter()


@pytest.fixture(scope="module")
def result():
    return COMPLETER.complete(IMAGE, drawn_on(TRUTH, [11, 18, 25]))


def test_a_blob_drawn_on_three_slices_is_filled_in(result):
    assert dice(result.probability >= 0.5, TRUTH) > 0.9
    assert result.drawn.axis == 0 and result.drawn.indices.tolist() == [11, 18, 25]
    assert result.separability > 0.9 and result.appearance_weight > 0  # the blob has its own grey level
    assert result.warnings == []


def test_the_drawn_slices_come_back_exactly(result):
    for z in (11, 18, 25):
        assert np.array_equal(result.probability[z] == 1.0, TRUTH[z])
        assert np.all((result.probability[z] == 0.0) | (result.probability[z] == 1.0))


def test_the_suggested_slice_is_an_uncertain_undrawn_one(result):
    assert result.next_slice is not None and result.next_slice not in (11, 18, 25)
    assert result.slice_uncertainty[result.next_slice] == result.slice_uncertainty.max() > 0
    assert np.all(result.slice_uncertainty[[11, 18, 25]] == 0)


def test_the_appearance_helps_where_the_structure_has_its_own_grey_level():
    drawn = drawn_on(TRUTH, [11, 18, 25])
    parts = COMPLETER.parts(IMAGE, drawn)
    fusion = COMPLETER.config.fusion
    prior_only = parts.probability(dataclasses.replace(fusion, appearance=Gate(0.0, 0.0))) >= 0.5
    assert dice(parts.probability(fusion) >= 0.5, TRUTH) > dice(prior_only, TRUTH)


def test_a_tip_of_a_few_pixels_drawn_as_a_correction_does_not_shut_the_appearance_s_gate(result):
    # the user draws the structure's last slice: 9 px that show only background (partial volume).
    # Held out, the appearance scores Dice 0 there; averaged per drawn slice that shut the gate
    # (tissue classes: the worst slice drawn as a correction lost 0.19 Dice), pooled it weighs
    # as little as it covers.
    drawn = drawn_on(TRUTH, [11, 18, 25])
    drawn[5, 21:24, 19:22] = True
    corrected = COMPLETER.complete(IMAGE, drawn)
    assert corrected.separability > 0.9 and corrected.appearance_weight > 0
    assert corrected.separability < result.separability  # the tip was scored, not skipped


def test_drawn_slices_along_another_axis_are_completed_along_it():
    result = COMPLETER.complete(IMAGE, drawn_on(TRUTH, [12, 20, 28], axis=1))
    assert result.drawn.axis == 1
    assert dice(result.probability >= 0.5, TRUTH) > 0.85


def test_one_drawn_slice_works_and_warns():
    result = COMPLETER.complete(IMAGE, drawn_on(TRUTH, [18]))
    assert any("only one slice" in w for w in result.warnings)
    assert (result.probability >= 0.5).sum() > TRUTH[18].sum()


def test_voxels_drawn_in_another_orientation_are_kept_and_reported():
    drawn = drawn_on(TRUTH, [11, 18, 25]) | drawn_on(TRUTH, [20], axis=2)
    result = COMPLETER.complete(IMAGE, drawn)
    assert result.drawn.axis == 0 and result.drawn.other_voxels > 0
    assert np.all(result.probability[drawn] == 1.0)
    assert any("another orientation" in w for w in result.warnings)


def test_a_small_animal_is_completed_like_the_same_anatomy_at_a_human_size(result):
    # the same voxels at a tenth of the spacing (a 7 mm volume of 0.1 mm voxels): the swell, the
    # prior's scale and the appearance's blurs (settings in mm) scale with the anatomy; before
    # they did, the swell alone (0.5 mm, 5 of these pixels) grew the structure between the drawn slices
    small = Volume(IMAGE.array, IMAGE.spacing * 0.1)
    shrunk = SliceCompleter().complete(small, drawn_on(TRUTH, [11, 18, 25]))
    np.testing.assert_allclose(shrunk.probability, result.probability, atol=1e-4)
    assert shrunk.separability == pytest.approx(result.separability)


def test_cropped_parts_give_the_same_probability_as_the_whole():
    parts = COMPLETER.parts(IMAGE, drawn_on(TRUTH, [11, 18, 25]))
    box = parts.reach()
    whole = parts.probability(COMPLETER.config.fusion)
    assert np.array_equal(parts.cropped(box).probability(COMPLETER.config.fusion), whole[box])
    outside = np.ones(whole.shape, bool)
    outside[box] = False
    assert np.all(whole[outside] == 0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [(np.zeros(SHAPE, bool), "empty: draw"), (TRUTH, "already a 3D shape"), (np.zeros((3, 3, 3), bool), "grid")],
)
def test_bad_segments_are_refused_with_a_message(mask, message):
    with pytest.raises(InputError, match=message):
        COMPLETER.complete(IMAGE, mask)


def test_a_non_finite_image_is_refused():
    array = IMAGE.array.copy()
    array[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN|finite"):
        COMPLETER.complete(IMAGE.with_array(array), drawn_on(TRUTH, [11, 18]))


def test_gates_grow_with_the_score_from_their_threshold():
    gate = Gate(2.0, 0.6)
    assert gate(0.5) == 0.0 and gate(0.6) == 0.0 and gate(0.8) == pytest.approx(1.0) and gate(1.0) == 2.0
    with pytest.raises(ValueError, match="threshold"):
        Gate(1.0, 1.0)
    with pytest.raises(ValueError, match="prior_scale_mm"):
        FusionConfig(prior_scale_mm=0)
    with pytest.raises(ValueError, match="prior_doubling_mm"):
        FusionConfig(prior_doubling_mm=0)


def test_the_prior_s_scale_doubles_at_the_doubling_distance_from_the_known_slices():
    drawn = find_drawn_slices(drawn_on(TRUTH, [11, 18, 25]))
    distance = np.full((3, 2, 2), 4.0, np.float32)
    known = SliceParts(drawn, distance, None, 0.0, None, 0.0, np.array([0.0, 10.0, 20.0]))
    fusion = FusionConfig(prior_scale_mm=2.0, prior_doubling_mm=10.0)
    np.testing.assert_allclose(known.logits(fusion)[:, 0, 0], [2.0, 1.0, 2.0 / 3.0], rtol=1e-6)
    unknown = SliceParts(drawn, distance, None, 0.0, None, 0.0)  # templates of other volumes: no known slice
    np.testing.assert_allclose(unknown.logits(fusion), 2.0)


def test_away_from_the_drawn_slices_the_prior_is_less_sure_and_the_suggestion_moves_there():
    # one drawn slice: with the same scale everywhere the most uncertain slice is the widest, next
    # to the drawn one, where a correction adds little; a scale growing with the distance moves
    # the suggestion away, and no boundary of the prior alone moves
    drawn = drawn_on(TRUTH, [18])
    same = SliceCompleter(config=CompletionConfig(fusion=FusionConfig(prior_doubling_mm=np.inf), appearance=False))
    growing = SliceCompleter(config=CompletionConfig(appearance=False))
    flat, grown = same.complete(IMAGE, drawn), growing.complete(IMAGE, drawn)
    assert np.array_equal(flat.probability >= 0.5, grown.probability >= 0.5)
    assert abs(grown.next_slice - 18) > abs(flat.next_slice - 18)
    doubt = grown.slice_uncertainty / np.maximum(flat.slice_uncertainty, 1e-9)
    assert 1.0 < doubt[19] < doubt[20] < doubt[22]  # the further from the drawn slice (2 mm apart), the less sure


def test_without_the_appearance_the_prior_decides():
    completer = SliceCompleter(config=CompletionConfig(appearance=False))
    result = completer.complete(IMAGE, drawn_on(TRUTH, [11, 18, 25]))
    assert result.separability == 0.0 and result.appearance_weight == 0.0
    assert dice(result.probability >= 0.5, TRUTH) > 0.85
