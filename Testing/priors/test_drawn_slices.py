"""Which slices a user drew, and along which axis (vessa.priors.drawn_slices)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from shapes import drawn_on, ellipsoid

from vessa.errors import InputError
from vessa.priors.drawn_slices import find_drawn_slices, run_lengths

SHAPE = (30, 34, 38)
BLOB = ellipsoid(SHAPE, (15, 17, 19), (11, 12, 13))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_axis_and_slices_of_drawn_slices_are_found(axis):
    slices = [8, 15, 22]
    drawn = find_drawn_slices(drawn_on(BLOB, slices, axis))
    assert drawn.axis == axis
    assert drawn.indices.tolist() == slices
    assert drawn.other_voxels == 0
    assert np.array_equal(drawn.masks, np.moveaxis(BLOB, axis, 0)[slices])


def test_neighbouring_drawn_slices_are_still_slices():
    drawn = find_drawn_slices(drawn_on(BLOB, [10, 11, 20], axis=1))
    assert drawn.axis == 1 and drawn.indices.tolist() == [10, 11, 20]


def test_two_orientations_use_the_one_with_most_voxels_and_count_the_others():
    mask = drawn_on(BLOB, [8, 15, 22], axis=0) | drawn_on(BLOB, [19], axis=2)
    drawn = find_drawn_slices(mask)
    assert drawn.axis == 0 and drawn.indices.tolist() == [8, 15, 22]
    coronal_only = drawn_on(BLOB, [19], axis=2) & ~drawn_on(BLOB, [8, 15, 22], axis=0)
    assert drawn.other_voxels == int(coronal_only.sum())


def test_an_empty_segment_says_what_to_do():
    with pytest.raises(InputError, match="empty: draw the structure"):
        find_drawn_slices(np.zeros(SHAPE, bool))


def test_a_3d_shape_is_not_a_set_of_drawn_slices():
    with pytest.raises(InputError, match="already a 3D shape"):
        find_drawn_slices(BLOB)


def test_a_given_axis_is_used_as_it_is():
    drawn = find_drawn_slices(drawn_on(BLOB, [5, 25], axis=0), axis=0)
    assert drawn.indices.tolist() == [5, 25]
    with pytest.raises(InputError, match="axis=3"):
        find_drawn_slices(BLOB, axis=3)


def test_run_lengths_along_each_axis():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2, 1:5] = True
    assert run_lengths(mask, 0)[1, 2, 1] == 2
    assert run_lengths(mask, 2)[1, 2, 1] == 4
    assert run_lengths(mask, 1)[1, 2, 1] == 1
    assert run_lengths(mask, 0)[0, 0, 0] == 0


def test_the_distance_to_the_nearest_known_slice_counts_slices_drawn_empty_too():
    drawn = find_drawn_slices(drawn_on(ellipsoid((12, 20, 20), (6, 10, 10), (5, 6, 6)), [3, 6]))
    assert drawn.slices_to_known(12).tolist() == [3, 2, 1, 0, 1, 1, 0, 1, 2, 3, 4, 5]
    marked = dataclasses.replace(drawn, empty=np.array([10]))
    assert marked.slices_to_known(12).tolist() == [3, 2, 1, 0, 1, 1, 0, 1, 2, 1, 0, 1]
