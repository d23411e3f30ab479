"""The per-case appearance model (vessa.priors.appearance)."""

from __future__ import annotations

import numpy as np
import pytest
from shapes import ellipsoid

from vessa.priors.appearance import band_width, fit_appearance, image_features

SHAPE = (6, 40, 40)


def slices_with(mask: np.ndarray, inside: float, outside: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.where(mask, inside, outside) + rng.normal(0, 0.05, mask.shape), 0, 1).astype(np.float32)


BLOB = ellipsoid(SHAPE, (2.5, 20, 20), (8, 9, 9))


def test_features_are_intensity_blurs_gradient_and_laplacian():
    unit = slices_with(BLOB, 0.8, 0.2)
    features = image_features(unit, (1.0, 1.0))
    assert features.shape == (*SHAPE, 5)
    assert np.array_equal(features[..., 0], unit)
    assert features[..., 1].std() < unit.std()  # blurred


def test_a_structure_with_its_own_grey_levels_separates_and_is_recognised():
    unit = slices_with(BLOB, 0.8, 0.2)
    model = fit_appearance(image_features(unit[:3], (1.0, 1.0)), BLOB[:3], (1.0, 1.0))
    assert model.separability > 0.9
    logits = model.logits(image_features(unit[4:5], (1.0, 1.0)))[0]
    assert (logits[BLOB[4]] > 0).mean() > 0.9 and (logits[~BLOB[4]] < 0).mean() > 0.9


def test_a_structure_that_looks_like_its_surroundings_does_not_separate():
    unit = slices_with(np.zeros(SHAPE, bool), 0.5, 0.5)
    model = fit_appearance(image_features(unit[:3], (1.0, 1.0)), BLOB[:3], (1.0, 1.0))
    assert model.separability < 0.75


def test_one_labelled_slice_is_cross_validated_on_blocks():
    unit = slices_with(BLOB, 0.8, 0.2)
    model = fit_appearance(image_features(unit[2:3], (1.0, 1.0)), BLOB[2:3], (1.0, 1.0))
    assert model.separability > 0.9


def test_one_labelled_slice_too_small_to_split_into_blocks_is_not_trusted():
    # 3 x 3 px inside one 16-px block, its band reaching into the next: one half of the
    # checkerboard shows none of the structure. Scoring that half (nothing predicted, nothing
    # there) used to read Dice 1 and open the gate; on tiny macaque structures drawn on one
    # slice the completion then lost half its Dice.
    tiny = np.zeros((1, 40, 40), bool)
    tiny[0, 12:15, 12:15] = True
    unit = slices_with(tiny, 0.8, 0.2)
    assert fit_appearance(image_features(unit, (1.0, 1.0)), tiny, (1.0, 1.0)).separability == 0.0


def test_pooled_a_tiny_tip_that_looks_like_its_surroundings_weighs_as_little_as_it_covers():
    # three slices of a blob with its own grey level, and its tip: 4 px as dark as the background
    # (a brain's last slice of grey matter, all partial volume). Held out, the tip scores Dice 0.
    masks = np.zeros((4, 40, 40), bool)
    masks[:3] = BLOB[1:4]
    masks[3, 19:21, 19:21] = True
    bright = masks.copy()
    bright[3] = False  # the tip's slice shows background only
    features = image_features(slices_with(bright, 0.8, 0.2), (1.0, 1.0))
    assert fit_appearance(features, masks, (1.0, 1.0), pooled=True).separability > 0.9
    assert fit_appearance(features, masks, (1.0, 1.0)).separability < 0.8  # the mean: Dice 0 counts a quarter
    masks[3] = BLOB[2]  # a whole slice that looks like the background is no noise: shut either way
    assert fit_appearance(features, masks, (1.0, 1.0), pooled=True).separability < 0.9


def test_the_band_is_half_the_radius_and_at_least_three_pixels():
    masks = np.zeros((1, 50, 50), bool)
    masks[0, 5:45, 5:45] = True  # 40 x 40 px of 0.5 mm: area 400 mm2, radius ~11.3 mm
    assert band_width(masks, (0.5, 0.5)) == pytest.approx(0.5 * np.sqrt(400 / np.pi))
    tiny = np.zeros((1, 10, 10), bool)
    tiny[0, 4, 4] = True
    assert band_width(tiny, (2.0, 1.0)) == 6.0


def test_the_classifier_is_trained_only_when_its_log_odds_are_asked_for(monkeypatch):
    from vessa.priors import appearance

    trained = []
    monkeypatch.setattr(appearance, "_train", lambda x, y, seed, train=appearance._train: trained.append(len(x))
                        or train(x, y, seed))
    unit = slices_with(BLOB, 0.8, 0.2)
    model = fit_appearance(image_features(unit[:3], (1.0, 1.0)), BLOB[:3], (1.0, 1.0))
    assert len(trained) == 3 and model.separability > 0.9  # the three held-out folds only
    model.logits(image_features(unit[4:5], (1.0, 1.0)))
    model.logits(image_features(unit[5:6], (1.0, 1.0)))
    assert len(trained) == 4 and trained[-1] == len(model.x)  # then once, on every band pixel


def test_held_out_folds_stop_once_the_rest_could_not_open_the_gate(monkeypatch):
    from vessa.priors import appearance

    trained = []
    monkeypatch.setattr(appearance, "_train", lambda x, y, seed, train=appearance._train: trained.append(len(x))
                        or train(x, y, seed))
    flat = image_features(slices_with(np.zeros(SHAPE, bool), 0.5, 0.5)[:4], (1.0, 1.0))
    every = fit_appearance(flat, BLOB[:4], (1.0, 1.0))
    assert len(trained) == 4 and every.separability < 0.6
    trained.clear()
    gated = fit_appearance(flat, BLOB[:4], (1.0, 1.0), gate=0.9)
    assert len(trained) < 4 and gated.separability <= 0.9  # shut either way
    trained.clear()
    blob = image_features(slices_with(BLOB, 0.8, 0.2)[:4], (1.0, 1.0))
    assert fit_appearance(blob, BLOB[:4], (1.0, 1.0), gate=0.9).separability > 0.9 and len(trained) == 4
    trained.clear()
    gated = fit_appearance(flat, BLOB[:4], (1.0, 1.0), gate=0.9, pooled=True)
    assert len(trained) < 4 and gated.separability <= 0.9  # pooled, the same bound
    assert fit_appearance(flat, BLOB[:4], (1.0, 1.0), pooled=True).separability < 0.6


def test_log_odds_are_computed_on_the_band_only_with_the_same_values_as_on_whole_slices():
    from vessa.priors.fusion import appearance_logits
    from vessa.priors.slice_prior import ABSENT, signed_distance

    shape = (4, 120, 130)
    truth = ellipsoid(shape, (1.5, 40, 20), (6, 15, 14))  # near the image's edge on one side
    unit = slices_with(truth, 0.7, 0.3, seed=1)
    spacing = (0.8, 0.8)
    model = fit_appearance(image_features(unit[:2], spacing), truth[:2], spacing)
    distance = np.stack([signed_distance(m, spacing) for m in truth])
    distance[3] = ABSENT  # a slice the prior does not reach
    out = appearance_logits(distance, unit, model, spacing)
    whole = image_features(unit, spacing)
    near = distance > -model.band_mm
    assert near[:3].any() and not near[3].any() and not near[:, 90:].any()
    assert np.array_equal(out[near], model.logits(whole[near])) and not out[~near].any()
