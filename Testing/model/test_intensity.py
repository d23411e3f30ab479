"""Intensity policy: CT windows, MR percentiles, sam2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vessa.model.intensity import (
    CT_WINDOWS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    intensity_range,
    is_ct,
    normalize_for_sam,
    to_unit_range,
)


@pytest.mark.parametrize(
    ("values", "modality", "expected"),
    [
        ([-1000.0, 50.0], "", True),  # air in HU
        ([0.0, 800.0], "", False),
        ([0.0, 800.0], "CT", True),
        ([-1000.0, 50.0], "MR", False),
        ([-1000.0, 50.0], " ct ", True),
    ],
)
def test_ct_detection(values, modality, expected):
    assert is_ct(np.array(values), modality) is expected


def test_ct_uses_window_presets():
    ct = np.array([-1000.0, 0.0, 300.0])
    assert intensity_range(ct) == CT_WINDOWS["soft_tissue"] == (-160.0, 240.0)
    assert intensity_range(ct, ct_window="wide") == (-1000.0, 1000.0)
    with pytest.raises(ValueError, match="ct_window"):
        intensity_range(ct, ct_window="liver")


def test_mr_uses_volume_percentiles():
    mr = np.arange(100_001, dtype=np.float32)
    low, high = intensity_range(mr, "MR")
    assert low == pytest.approx(500.0) and high == pytest.approx(99_500.0)
    unit = to_unit_range(np.array([0.0, 500.0, 50_000.0, 99_500.0, 100_000.0]), low, high)
    np.testing.assert_allclose(unit, [0.0, 0.0, 49_500 / 99_000, 1.0, 1.0], rtol=1e-6)
    assert unit.dtype == np.float32


def test_constant_image_does_not_divide_by_zero():
    low, high = intensity_range(np.full((3, 4, 4), 7.0), "MR")
    assert high > low
    assert np.all(to_unit_range(np.full(3, 7.0), low, high) == 0.0)


def test_normalize_for_sam_replicates_and_uses_imagenet_stats():
    unit = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 4, 5)
    images = normalize_for_sam(unit)
    assert images.shape == (2, 3, 4, 5)
    for c in range(3):
        assert images[0, c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-6)
        assert images[1, c, 3, 4].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)
