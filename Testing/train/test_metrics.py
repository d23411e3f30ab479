"""The one Dice (`vessa.train.metrics`): known values, both empty-reference rules, per structure, bad input."""

import math

import pytest
import torch

from vessa.train.metrics import dice, dice_per_structure


def square(size=16, top=4, side=8) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., top:top + side, top:top + side] = True
    return mask


EMPTY = torch.zeros(1, 1, 16, 16, dtype=torch.bool)


@pytest.mark.parametrize(("predicted", "reference", "empty", "expected"), [
    (square(), square(), "match", 1.0),
    (square(side=4), square(), "match", 2 * 16 / (16 + 64)),
    (square(side=4), square(), "skip", 2 * 16 / (16 + 64)),
    (EMPTY, square(), "skip", 0.0),
    (EMPTY, EMPTY, "match", 1.0),   # an absent structure found absent
    (square(), EMPTY, "match", 0.0),  # ... or wrongly found
    (EMPTY, EMPTY, "skip", math.nan),  # nothing to score
    (square(), EMPTY, "skip", math.nan),
])
def test_dice_known_values_and_empty_reference_rules(predicted, reference, empty, expected):
    score = dice(predicted, reference, empty)
    assert score.shape == (1,)
    assert float(score[0]) == pytest.approx(expected, nan_ok=True)


def test_dice_is_per_sample_of_any_shape():
    predicted = torch.stack([square(), square(side=4), EMPTY])[:, 0]  # [3, 1, 16, 16]
    reference = torch.stack([square(), square(), EMPTY])[:, 0]
    assert dice(predicted, reference, "match").tolist() == pytest.approx([1.0, 0.4, 1.0])
    volumes = predicted[:, None].expand(3, 5, 1, 16, 16)  # [N, D, 1, H, W]: the same slice 5 times
    assert dice(volumes, reference[:, None].expand(3, 5, 1, 16, 16), "match").tolist() == pytest.approx([1.0, 0.4, 1.0])


def test_dice_per_structure_skips_structures_absent_from_the_reference():
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[..., :2, :] = 1
    prediction = labels.clone()
    prediction[..., 3, :] = 2  # structure 2: predicted, not in the reference
    scores = dice_per_structure(prediction, labels, classes=4)
    assert scores.shape == (1, 3)
    assert scores[0, 0] == 1.0 and scores[0, 1:].isnan().all()


@pytest.mark.parametrize(("predicted", "reference", "empty", "message"), [
    (square(), square(), "ignore", "empty='ignore'"),
    (square(), square(size=8), "match", "mask shapes differ"),
])
def test_dice_bad_input(predicted, reference, empty, message):
    with pytest.raises(ValueError, match=message):
        dice(predicted, reference, empty)
