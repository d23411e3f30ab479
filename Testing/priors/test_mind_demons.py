"""Demons on MIND descriptors: the deformable step for templates whose grey levels differ from the target's."""

from __future__ import annotations

import time

import numpy as np
from shapes import dice, ellipsoid

from vessa.io import Volume
from vessa.priors.mind_demons import PAIRS, mind_demons, mind_descriptor
from vessa.priors.registration import warp_mask

SHAPE = (32, 40, 40)


def images() -> tuple[Volume, np.ndarray, Volume, np.ndarray]:
    """A dark ellipsoid in a bright field (the target) and a bright sphere in a dark one (the
    template): opposite contrast, and a change of shape no affine map makes."""
    rng = np.random.default_rng(0)
    sphere = ellipsoid(SHAPE, (16, 20, 20), (8, 9, 9))
    squashed = ellipsoid(SHAPE, (16, 20, 20), (8, 13, 7))
    target = Volume((200 - 150 * squashed + rng.normal(0, 4, SHAPE)).astype(np.float32))
    template = Volume((50 + 150 * sphere + rng.normal(0, 4, SHAPE)).astype(np.float32))
    return target, squashed, template, sphere


def test_the_descriptor_is_the_same_whatever_maps_the_grey_levels():
    target, _, _, _ = images()
    inverted = 1000.0 - 3.0 * target.array  # contrast reversed and tripled
    assert np.corrcoef(target.array.ravel(), inverted.ravel())[0, 1] < -0.99
    descriptor, of_inverted = mind_descriptor(target.array), mind_descriptor(inverted)
    assert descriptor.shape == (12, *SHAPE) and descriptor.max() == 1.0
    # a channel per pair of face neighbours a face diagonal apart (the self-similarity context)
    assert len(set(PAIRS)) == 12 and all(np.abs(np.subtract(a, b)).sum() == 2 for a, b in PAIRS)
    np.testing.assert_allclose(descriptor, of_inverted, atol=1e-5)


def test_mind_demons_reshape_a_template_of_opposite_contrast():
    target, truth, template, mask = images()
    field, stopped = mind_demons(target.to_sitk(), template.to_sitk(), 30, 1.0, time.perf_counter() + 60)
    assert not stopped
    assert dice(mask, truth) < 0.81
    assert dice(warp_mask(mask, template, target, field) >= 0.5, truth) >= 0.95


def test_mind_demons_stop_at_the_deadline_with_the_field_they_have():
    target, truth, template, mask = images()
    field, stopped = mind_demons(target.to_sitk(), template.to_sitk(), 30, 1.0, time.perf_counter() - 1)
    assert stopped
    np.testing.assert_array_equal(warp_mask(mask, template, target, field) >= 0.5, mask)
