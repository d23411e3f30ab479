"""The shape prior of drawn slices (vessa.priors.slice_prior)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapes import dice, drawn_on, ellipsoid

from vessa.priors.drawn_slices import find_drawn_slices
from vessa.priors.slice_prior import (
    ABSENT,
    TAPER_EXPONENTS,
    SlicePriorConfig,
    closing,
    closing_shape,
    flow_weight,
    profile_area,
    signed_distance,
    slice_prior,
)

SHAPE = (40, 48, 48)
SPACING = (2.0, 1.0, 1.0)


def test_signed_distance_is_positive_inside_in_millimetres():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    distance = signed_distance(mask, (2.0, 1.0))
    assert distance[4, 4] > 0 > distance[0, 4]
    assert distance[0, 4] == pytest.approx(-4.0)  # two rows of 2 mm outside
    assert np.all(signed_distance(np.zeros((3, 3), bool), (1.0, 1.0)) == ABSENT)


@pytest.mark.parametrize("follow_anatomy", [False, True])
def test_an_ellipsoid_is_filled_in_between_and_closed_beyond_its_drawn_slices(follow_anatomy):
    truth = ellipsoid(SHAPE, (20, 24, 24), (14, 15, 15))
    unit = truth.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [13, 20, 27]))
    prior = slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=follow_anatomy))
    assert dice(prior > 0, truth) > 0.85
    for z in (13, 20, 27):
        assert np.array_equal(prior[z] > 0, truth[z])
    assert np.all(prior[:3] == ABSENT) and np.all(prior[-3:] == ABSENT)  # beyond the extrapolation
    assert (prior[8] > 0).sum() < (prior[13] > 0).sum()  # closing, not a copied slice


def test_following_the_anatomy_tracks_a_structure_that_moves_across_slices():
    truth = ellipsoid(SHAPE, (20, 24, 24), (14, 10, 10), drift=(0.0, 0.8))
    unit = truth.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [12, 28]))
    copied = slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=False))
    carried = slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=True))
    outside = [z for z in range(SHAPE[0]) if z < 12 or z > 28]
    assert dice(carried[outside] > 0, truth[outside]) > dice(copied[outside] > 0, truth[outside]) + 0.1


def test_a_structure_that_does_not_move_with_the_image_is_copied_more_than_carried():
    truth = ellipsoid(SHAPE, (20, 24, 24), (14, 10, 10))
    moving_blob = ellipsoid(SHAPE, (20, 24, 24), (18, 10, 10), drift=(0.0, 1.2))  # the image moves, the mask not
    unit = moving_blob.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [12, 20, 28]))
    beyond = [z for z in range(SHAPE[0]) if z < 12 or z > 28]

    def beyond_dice(config: SlicePriorConfig) -> float:
        return dice(slice_prior(unit, drawn, SPACING, config)[beyond] > 0, truth[beyond])

    carried = beyond_dice(SlicePriorConfig(flow_weight=1.0, flow_gate=0.0))
    copied = beyond_dice(SlicePriorConfig(follow_anatomy=False))
    assert carried < copied - 0.03  # the flow drags the ends along the blob (0.71 against 0.76)
    assert beyond_dice(SlicePriorConfig()) > copied - 0.01  # the drawn slices show it: copied


def test_the_flow_s_weight_follows_how_well_it_reproduces_the_drawn_slices():
    config = SlicePriorConfig(flow_weight=0.75, flow_gate=0.4)
    assert flow_weight(None, None, config) == 0.75  # one drawn slice: nothing to compare
    assert flow_weight(0.8, 0.8, config) == 0.75
    assert flow_weight(0.9, 0.7, config) == 1.0 and flow_weight(0.3, 0.8, config) == 0.0
    assert flow_weight(0.3, 0.8, SlicePriorConfig(flow_weight=0.5, flow_gate=0.0)) == 0.5
    with pytest.raises(ValueError, match="flow_weight"):
        SlicePriorConfig(flow_weight=1.5)


def test_one_drawn_slice_reaches_about_its_radius():
    truth = ellipsoid(SHAPE, (20, 24, 24), (8, 8, 8))  # 8 slices of 2 mm = 16 mm half-height
    drawn = find_drawn_slices(drawn_on(truth, [20]))
    prior = slice_prior(truth.astype(np.float32), drawn, SPACING, SlicePriorConfig(single_extent=1.0))
    reached = np.flatnonzero((prior > 0).any(axis=(1, 2)))
    assert reached[0] < 20 < reached[-1]
    assert 3 <= 20 - reached[0] <= 5  # radius 8 px = 8 mm -> 4 slices of 2 mm


def test_slices_drawn_empty_stop_the_structure_and_split_the_interpolation():
    truth = ellipsoid(SHAPE, (20, 24, 24), (14, 15, 15))
    unit = truth.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [13, 20, 27]))
    free = slice_prior(unit, drawn, SPACING)
    assert (free[9] > 0).any() and (free[17] > 0).any()
    walled = slice_prior(unit, dataclasses.replace(drawn, empty=np.array([10, 17])), SPACING)
    assert not (walled[:11] > 0).any()  # closes before slice 10
    assert not (walled[17] > 0).any()  # nothing on the slice drawn empty ...
    assert (walled[16] > 0).sum() < (free[16] > 0).sum()  # ... and the sides close towards it
    assert (walled[18] > 0).sum() < (free[18] > 0).sum()
    assert (walled[15] > 0).any() and (walled[19] > 0).any()
    assert np.array_equal(walled[20:] > 0, free[20:] > 0)  # the other side is untouched


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="extrapolation"):
        SlicePriorConfig(extrapolation=-1)


def test_the_interpolated_distance_swells_midway_between_drawn_slices_only():
    disc = ellipsoid(SHAPE, (20, 24, 24), (14, 15, 15))[20]
    truth = np.repeat(disc[None], SHAPE[0], axis=0)  # a cylinder: the least area between is each drawn one's
    unit = truth.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [12, 20, 28]))
    plain = slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=False, swell_mm=0.0))
    swollen = slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=False, swell_mm=2.0))
    difference = swollen - plain
    assert np.allclose(difference[16][plain[16] > ABSENT], 2.0)  # midway between 12 and 20: the full swell
    assert np.allclose(difference[14][plain[14] > ABSENT], 2.0 * 4 * 0.25 * 0.75)
    for z in (12, 20, 28, 5, 35):  # drawn slices and beyond them: unchanged
        assert np.array_equal(swollen[z], plain[z])
    with pytest.raises(ValueError, match="swell_mm"):
        SlicePriorConfig(swell_mm=-1.0)


def test_the_least_area_between_drawn_slices_bulges_from_the_chord_towards_an_ellipse():
    for bulge in (0.0, 0.5, 1.0):
        assert profile_area(400, 100, 0.0, bulge) == pytest.approx(400)  # the drawn areas at the drawn slices
        assert profile_area(400, 100, 1.0, bulge) == pytest.approx(100)
        assert profile_area(100, 400, 0.25, bulge) == pytest.approx(profile_area(400, 100, 0.75, bulge))
        assert profile_area(300, 300, 0.5, bulge) == pytest.approx(300)
    assert profile_area(400, 100, 0.5, 0.0) == pytest.approx(400 * 0.75**2)  # radii 1 -> 0.5: the chord's 0.75
    # the ellipse widest at the larger mask through the smaller: x = sqrt(1 - 0.5^2) there, half of it midway
    assert profile_area(400, 100, 0.5, 1.0) == pytest.approx(400 * (1 - 0.75 / 4))
    assert profile_area(400, 100, 0.5, 0.5) == pytest.approx(400 * ((0.75 + np.sqrt(1 - 0.75 / 4)) / 2) ** 2)
    assert profile_area(0, 0, 0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="bulge"):
        SlicePriorConfig(bulge=-0.5)


def test_a_structure_s_tip_drawn_is_reached_like_an_ellipsoid_s_end_not_a_cone():
    truth = ellipsoid(SHAPE, (20, 24, 24), (15, 15, 15))
    unit = truth.astype(np.float32) * 0.8 + 0.1
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    drawn = find_drawn_slices(drawn_on(truth, [20, int(present[-1])]))  # the middle and the tip (a few pixels)
    between = slice(21, int(present[-1]))

    def prior(bulge: float) -> np.ndarray:
        return slice_prior(unit, drawn, SPACING, SlicePriorConfig(follow_anatomy=False, bulge=bulge)) > 0

    chord, bulged = prior(0.0), prior(0.5)
    areas = drawn.masks.sum(axis=(1, 2))
    for z in range(between.start, between.stop):
        wanted = profile_area(*areas, (z - 20) / (present[-1] - 20), 0.5)
        assert bulged[z].sum() >= round(wanted)  # covers at least the profile's area
    assert dice(bulged[between], truth[between]) > dice(chord[between], truth[between]) + 0.05
    for z in drawn.indices:
        assert np.array_equal(bulged[z], truth[z])


def test_one_drawn_slice_closes_like_a_flatter_superellipsoid_and_more_slices_like_an_ellipsoid():
    truth = ellipsoid(SHAPE, (20, 24, 24), (14, 15, 15))
    unit = truth.astype(np.float32) * 0.8 + 0.1

    def prior(slices: list[int], exponent: float) -> np.ndarray:
        config = SlicePriorConfig(follow_anatomy=False, single_end_exponent=exponent)
        return slice_prior(unit, find_drawn_slices(drawn_on(truth, slices)), SPACING, config)

    flat, round_ = prior([20], 3.0), prior([20], 2.0)
    beyond = [z for z in range(len(truth)) if z != 20 and (round_[z] > ABSENT).any()]
    assert beyond and all((flat[z] > 0).sum() >= (round_[z] > 0).sum() for z in beyond)
    assert any((flat[z] > 0).sum() > (round_[z] > 0).sum() for z in beyond)
    assert np.array_equal(prior([13, 20, 27], 3.0), prior([13, 20, 27], 2.0))
    with pytest.raises(ValueError, match="single_end_exponent"):
        SlicePriorConfig(single_end_exponent=0.5)


def test_the_closing_passes_through_the_last_two_drawn_slices_and_the_tip():
    assert closing(0.0, 1.5) == 1.0 and closing(1.0, 1.5) == 0.0
    assert closing(0.5, 1.0) == pytest.approx(0.5) and closing(0.6, 2.0) == pytest.approx(0.8)
    end = 1 / 3  # the end slice a third of the way from the slice behind to the tip
    assert closing_shape(closing(end, 1.5), end) == pytest.approx((end, 1.5))  # widest behind: q fits the taper
    assert closing_shape(0.1, end) == (end, TAPER_EXPONENTS[0])  # narrows faster than a cone: as a cone
    # narrowing less than an ellipse widest behind: an ellipse widest between the slices; both
    # radii (1 behind, the taper at the end slice) lie on it
    for taper in (0.95, 1.0, 1.1):
        x, q = closing_shape(taper, end)
        assert q == 2.0 and 0 < x < end
        widest = (end - x) / (1 - x)  # where the ellipse is widest, from the slice behind (0) to the tip (1)
        behind = widest / (1 - widest)  # the slice behind in the ellipse's own x (its widest 0, the tip 1)
        assert closing(x, 2.0) / closing(behind, 2.0) == pytest.approx(taper)
    assert closing_shape(5.0, end) == (0.0, 2.0)  # far wider at the end: widest there, as without a taper


def _double_cone(shape: tuple[int, int, int], center: int, half_height: float, radius: float) -> np.ndarray:
    """A boolean (k, j, i) double cone along k: radius `radius` at slice `center`, 0 `half_height` away."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    allowed = radius * (1 - np.abs(k - center) / half_height)
    return np.hypot(j - shape[1] / 2, i - shape[2] / 2) <= allowed


@pytest.mark.parametrize("shape_name", ["cone", "ellipsoid"])
def test_the_end_beyond_the_drawn_slices_continues_their_taper(shape_name):
    truth = (_double_cone(SHAPE, 20, 17, 15) if shape_name == "cone"
             else ellipsoid(SHAPE, (20, 24, 24), (16, 15, 15)))
    unit = truth.astype(np.float32) * 0.8 + 0.1
    drawn = find_drawn_slices(drawn_on(truth, [12, 20, 28]))

    def beyond_dice(follow_taper: bool) -> float:
        config = SlicePriorConfig(follow_anatomy=False, follow_taper=follow_taper)
        prior = slice_prior(unit, drawn, SPACING, config) > 0
        return dice(np.concatenate([prior[:12], prior[29:]]), np.concatenate([truth[:12], truth[29:]]))

    # the old end (an ellipsoid's, widest at the end slice) reaches too wide on both: 0.59 and 0.82
    assert beyond_dice(True) > max(0.9, beyond_dice(False) + 0.1)
    single = find_drawn_slices(drawn_on(truth, [20]))  # nothing behind one drawn slice: no taper to follow
    assert np.array_equal(*(slice_prior(unit, single, SPACING, SlicePriorConfig(follow_anatomy=False, follow_taper=f))
                            for f in (True, False)))
