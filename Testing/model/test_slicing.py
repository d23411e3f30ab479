"""Slicing geometry: axis choice, template reorientation, square frames, template slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vessa.model.slicing import SquareFrame, array_spacing, orient_like, slicing_axis, template_slices


@pytest.mark.parametrize(
    ("shape", "spacing_ijk", "axis"),
    [
        ((5, 40, 30), (0.7, 0.7, 3.0), 0),  # thick axial slices: cut along k
        ((40, 30, 5), (3.0, 0.7, 0.7), 2),  # thick along i: cut along i
        ((10, 20, 30), (1.0, 1.0, 1.0), 0),  # isotropic: the fewest, largest slices
        ((1, 40, 30), (1.0, 1.0, 1.0), 0),  # 2D image
        ((40, 1, 30), (1.0, 1.0, 1.0), 1),  # 2D image stored along j
        ((20, 20, 20), (0.5, 0.7, 3.0), 0),  # nothing isotropic in-plane: the coarsest axis
    ],
)
def test_slicing_axis(shape, spacing_ijk, axis):
    assert slicing_axis(shape, np.array(spacing_ijk)) == axis


def test_array_spacing_is_reversed():
    assert array_spacing(np.array([0.5, 0.7, 3.0])).tolist() == [3.0, 0.7, 0.5]


def test_orient_like_undoes_a_permutation_and_flip():
    target = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # (k, j, i), identity direction
    # The same voxels stored as i' = k, j' = j, k' = -i: array (k', j', i') = flip(transpose).
    stored = np.flip(np.transpose(target, (2, 1, 0)), axis=0)
    direction = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # columns i', j', k'
    oriented, order = orient_like(stored, direction, np.eye(3))
    np.testing.assert_array_equal(oriented, target)
    assert order == (2, 1, 0)
    same, identity = orient_like(target, np.eye(3), np.eye(3))
    assert identity == (0, 1, 2) and np.shares_memory(same, target)


def test_square_frame_keeps_physical_aspect_and_round_trips():
    frame = SquareFrame.for_slices(40, 30, row_spacing=1.0, col_spacing=2.0, size=256)
    assert (frame.height, frame.width) == (round(40 / 60 * 256), 256)
    rows = torch.linspace(0, 1, 40).view(1, 1, 40, 1)
    cols = torch.linspace(0, 1, 30).view(1, 1, 1, 30)
    smooth = (rows + cols).expand(2, 1, 40, 30) / 2
    square = frame.to_square(smooth)
    assert square.shape == (2, 1, 256, 256)
    assert torch.all(square[..., frame.height :, :] == 0)
    back = frame.from_square(square)
    assert back.shape == smooth.shape
    torch.testing.assert_close(back, smooth, atol=0.01, rtol=0)


def test_square_frame_of_a_thin_slice_is_at_least_one_pixel():
    frame = SquareFrame.for_slices(1, 500, 1.0, 1.0, 256)
    assert (frame.height, frame.width) == (1, 256)
    assert frame.from_square(frame.to_square(torch.ones(1, 1, 1, 500))).shape == (1, 1, 1, 500)


def test_template_slices_follow_relative_position_within_the_structure():
    present = np.arange(10, 21)  # the template's structure spans slices 10..20 of 30
    assert template_slices(5, present, 30).tolist() == [10, 10, 14, 20, 20]
    assert template_slices(1, present, 30).tolist() == [14]
    assert template_slices(3, np.array([3, 9]), 11).tolist() == [3, 3, 9]


def test_template_slice_limit_picks_among_evenly_spaced_slices_of_the_structure():
    present = np.arange(10, 41)  # 31 slices with the structure
    chosen = template_slices(200, present, 60, limit=4)
    assert sorted(set(chosen.tolist())) == [10, 20, 30, 40]  # first and last kept, evenly spaced
    unlimited = template_slices(200, present, 60)
    assert np.abs(chosen - unlimited).max() <= 5  # each target slice gets the nearest of the four
    few = np.array([3, 9])  # fewer than the limit: unchanged
    assert template_slices(5, few, 11, limit=4).tolist() == template_slices(5, few, 11).tolist()
