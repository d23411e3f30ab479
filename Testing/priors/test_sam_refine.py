"""SAM over crops of volume slices (vessa.priors.sam_refine), with a small randomly initialised
MiniSam: crops, the feature cache, prompts and the completer's SAM step. What SAM's real weights
outline is tested in Testing/model/test_minisam_pretrained.py and measured by
benchmarks/bench_completion.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shapes import blob_volume, drawn_on, ellipsoid

from vessa.model.minisam import MiniSam
from vessa.priors.completion import CompletionConfig, SliceCompleter
from vessa.priors.fusion import FusionConfig, Gate
from vessa.priors.sam_refine import LOGIT_LIMIT, MIN_CROP_PIXELS, CropBox, SliceSam, crop_box, fidelity

SHAPE = (20, 90, 100)
TRUTH = ellipsoid(SHAPE, (10, 45, 50), (7, 12, 14))
IMAGE = blob_volume(TRUTH)


@pytest.fixture(scope="module")
def sam() -> SliceSam:
    torch.manual_seed(0)
    return SliceSam(MiniSam(image_size=128), torch.device("cpu"), precision="float32", batch_size=3)


def test_the_crop_is_a_rounded_square_around_the_masks_with_a_margin():
    box = crop_box(TRUTH, margin=0.5)
    assert box.side % 8 == 0 and box.side >= 2 * 28  # the blob is 29 px wide: doubled by the margin
    assert box.row0 % 8 == 0 and box.col0 % 8 == 0
    assert box.row0 <= 33 and box.row0 + box.side >= 57
    tiny = np.zeros((1, 90, 100), bool)
    tiny[0, 40, 40] = True
    assert crop_box(tiny, 0.5).side == MIN_CROP_PIXELS


def test_cut_and_paste_round_trip_at_the_image_edge():
    planes = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    box = CropBox(-4, 6, 16)
    crops = box.cut(planes)
    assert crops.shape == (2, 16, 16) and np.all(crops[:, :4] == 0)
    back = box.paste(crops, (10, 12), fill=-1.0)
    assert np.array_equal(back[:, :, 6:], planes[:, :, 6:]) and np.all(back[:, :, :6] == -1.0)


def test_embeddings_are_cached_per_volume_crop_and_slice(sam):
    unit = IMAGE.array / IMAGE.array.max()
    box = crop_box(TRUTH, 0.5)
    before = sam.encoded
    first = sam.embeddings(("volume",), unit, np.array([3, 5, 7, 9]), box)
    assert sam.encoded - before == 4 and first.shape == (4, 256, 8, 8)
    again = sam.embeddings(("volume",), unit, np.array([5, 9, 11]), box)
    assert sam.encoded - before == 5  # only slice 11 is new
    assert torch.equal(again[:2], first[[1, 3]])


def test_outlines_are_logits_on_the_slice_grid_and_empty_masks_stay_empty(sam):
    unit = IMAGE.array / IMAGE.array.max()
    box = crop_box(TRUTH, 0.5)
    rows = np.array([0, 10])
    logits = sam.outline(sam.embeddings(("volume",), unit, rows, box), TRUTH[rows], box, SHAPE[1:])
    assert logits.shape == (2, *SHAPE[1:])
    assert np.all(logits[0] == -LOGIT_LIMIT)  # slice 0 holds no structure: no prompt, nothing outlined
    assert np.abs(logits[1]).max() <= LOGIT_LIMIT
    score = fidelity(sam, ("volume",), unit, rows[1:], TRUTH[rows[1:]], box)
    assert 0.0 <= score <= 1.0


def test_a_crop_is_kept_while_the_structure_stays_well_inside_it(sam):
    def square(low: int, high: int) -> np.ndarray:
        masks = np.zeros((2, 160, 160), bool)
        masks[:, low:high, low:high] = True
        return masks

    first = sam.sticky(("v",), crop_box(square(40, 80), 0.5), square(40, 80))
    assert first == CropBox(16, 16, 80)
    grown = square(36, 86)  # a correction made it larger: its own crop would differ
    assert crop_box(grown, 0.5) != first and sam.sticky(("v",), crop_box(grown, 0.5), grown) == first
    near_edge = square(20, 86)  # within 10 % of the crop's side from its edge: a new crop
    assert sam.sticky(("v",), crop_box(near_edge, 0.5), near_edge) == crop_box(near_edge, 0.5)
    small = square(50, 56)  # far smaller than the kept crop: a new, tighter one
    big = sam.sticky(("w",), crop_box(square(20, 120), 0.5), square(20, 120))
    assert big.side > 1.5 * crop_box(small, 0.5).side
    assert sam.sticky(("w",), crop_box(small, 0.5), small) == crop_box(small, 0.5)


def test_a_second_completion_of_the_same_volume_encodes_only_new_slices(sam):
    completer = SliceCompleter(sam, CompletionConfig(fusion=FusionConfig(sam=Gate(1.0, 0.0))))
    first = completer.complete(IMAGE, drawn_on(TRUTH, [6, 14]))
    assert first.encoded > 0 and first.sam_weight >= 0
    computed = completer.fields.computed
    corrected = completer.complete(IMAGE, drawn_on(TRUTH, [6, 10, 14]))
    assert corrected.encoded <= 1  # the crop is kept: at most a slice the first run did not outline
    assert completer.fields.computed == computed  # the deformations between slices are kept too
    assert np.array_equal(corrected.probability[10] == 1.0, TRUTH[10])


def test_a_new_drawn_slice_that_cannot_open_sams_gate_is_not_encoded(sam):
    def own() -> SliceSam:  # nothing cached by the other tests
        return SliceSam(sam.model, sam.device, precision="float32")

    config = CompletionConfig(fusion=FusionConfig(sam=Gate(1.0, 0.99)))
    completer = SliceCompleter(own(), config)
    first = completer.complete(IMAGE, drawn_on(TRUTH, [6, 14]))
    assert first.encoded == 2 and first.fidelity < 0.985 and first.sam_weight == 0.0
    corrected = completer.complete(IMAGE, drawn_on(TRUTH, [6, 10, 14]))
    assert corrected.encoded == 0  # even at Dice 1, slice 10 could not lift the mean above 0.99
    measured = SliceCompleter(own(), config)  # the same history, every part computed on the second run
    measured.complete(IMAGE, drawn_on(TRUTH, [6, 14]))
    parts = measured.parts(IMAGE, drawn_on(TRUTH, [6, 10, 14]), every_part=True)
    assert parts.fidelity < 0.99  # slice 10 measured: the gate stays shut
    assert np.array_equal(corrected.probability, measured.result(drawn_on(TRUTH, [6, 10, 14]), parts).probability)
    opening = SliceCompleter(own(), CompletionConfig(fusion=FusionConfig(sam=Gate(1.0, 0.1))))
    opening.complete(IMAGE, drawn_on(TRUTH, [6, 14]))
    assert opening.complete(IMAGE, drawn_on(TRUTH, [6, 10, 14])).fidelity == pytest.approx(parts.fidelity)
