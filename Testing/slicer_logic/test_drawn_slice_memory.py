"""DrawnSliceMemory: the segment tag that remembers drawn slices and the applied result."""

from __future__ import annotations

import numpy as np
import pytest
from VESSASegmentLib.drawn_slice_memory import DrawnSliceMemory, gridSignature, sliceDigests

from vessa.io import Volume

GRID = Volume(np.zeros((6, 8, 10), np.uint8), (0.5, 0.6, 2.0), (1.0, 2.0, 3.0))


def applied_mask() -> np.ndarray:
    mask = np.zeros(GRID.shape, bool)
    mask[1:5, 2:6, 3:8] = True
    mask[3, 2, 3] = False  # slices differ from one another
    return mask


def test_the_tag_round_trips_and_avoids_slicers_tag_separators():
    memory = DrawnSliceMemory.record(applied_mask(), 0, [1, 4], GRID)
    tag = memory.toTag()
    assert ":" not in tag and "|" not in tag
    assert DrawnSliceMemory.fromTag(tag) == memory
    assert sorted(memory.applied) == [1, 2, 3, 4]


@pytest.mark.parametrize("tag", ["", "axis=0", "axis=5;grid=x;drawn=1;applied=", "axis=0;grid=x;drawn=;applied=",
                                 "axis=0;grid=x;drawn=1;applied=2", "nonsense"])
def test_an_unreadable_tag_is_no_memory(tag):
    assert DrawnSliceMemory.fromTag(tag) is None


def test_drawn_now_is_the_remembered_slices_and_every_changed_one():
    mask = applied_mask()
    memory = DrawnSliceMemory.record(mask, 0, [1, 4], GRID)
    assert memory.drawnNow(mask).tolist() == [1, 4]
    corrected = mask.copy()
    corrected[2, 5, 5] = False  # a correction inside the result
    corrected[5, 0, 0] = True  # a slice the result did not reach
    corrected[3] = False  # a slice erased
    assert memory.drawnNow(corrected).tolist() == [1, 2, 3, 4, 5]


def test_the_memory_holds_on_its_grid_while_part_of_the_result_is_unchanged():
    mask = applied_mask()
    memory = DrawnSliceMemory.record(mask, 0, [1, 4], GRID)
    assert memory.holdsFor(mask, GRID)
    moved = Volume(GRID.array, GRID.spacing, (1.0, 2.0, 3.5))
    assert gridSignature(moved) != gridSignature(GRID) and not memory.holdsFor(mask, moved)
    redrawn = np.zeros_like(mask)
    redrawn[1] = mask[1]  # the completion erased, drawn slices kept: the segment is drawn afresh
    assert not memory.holdsFor(redrawn, GRID)


def test_slice_digests_along_each_axis():
    mask = applied_mask()
    for axis in range(3):
        digests = sliceDigests(mask, axis)
        assert sorted(digests) == np.flatnonzero(np.moveaxis(mask, axis, 0).any(axis=(1, 2))).tolist()
    assert sliceDigests(mask, 0)[1] == sliceDigests(mask, 0)[2] != sliceDigests(mask, 0)[3]
