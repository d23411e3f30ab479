"""Prompt generation: known similarity maps -> points, box, dense prompt (batched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from synthetic_features import TARGET_REGION, region_mask, synthetic_pair

from vessa.model.config import MatchingConfig
from vessa.model.matching import MaskedFeatureMatcher
from vessa.model.prompts import PromptGenerator, _component_at

SIZE, GRID = 256, 16  # input pixels, embedding cells (stride 16)


def cell_of(xy: torch.Tensor) -> tuple[int, int]:
    """(row, col) of the cell holding pixel (x, y)."""
    return int(xy[1] // 16), int(xy[0] // 16)


def blob_map() -> torch.Tensor:
    """Similarity 0.8 on rows 3-10 x cols 8-13, peak 1.0 at (4, 9), 0 elsewhere."""
    sim = torch.zeros(1, 1, GRID, GRID)
    sim[..., 3:11, 8:14] = 0.8
    sim[..., 4, 9] = 1.0
    return sim


BLOB_BOX = [8 * 16, 3 * 16, 14 * 16 - 1, 11 * 16 - 1]


def in_blob(row: int, col: int) -> bool:
    return 3 <= row <= 10 and 8 <= col <= 13


def test_points_box_and_mask_on_a_known_blob():
    sim = blob_map()
    prompts = PromptGenerator(MatchingConfig(), SIZE)(sim, 1.0 - sim)
    coords, labels = prompts.point_coords[0], prompts.point_labels[0]
    assert coords.shape == (3, 2) and labels.tolist() == [1, 1, 0]
    assert coords[0].tolist() == [9.5 * 16 - 0.5, 4.5 * 16 - 0.5]  # centre of the peak cell
    first, second = cell_of(coords[0]), cell_of(coords[1])
    assert in_blob(*second)
    assert max(abs(first[0] - second[0]), abs(first[1] - second[1])) > 3  # outside the NMS window
    row, col = cell_of(coords[2])  # negative: outside the blob, inside the box grown by 3 cells
    assert not in_blob(row, col)
    assert 0 <= row <= 13 and 5 <= col <= 15
    assert prompts.boxes[0].tolist() == BLOB_BOX
    mask = prompts.mask_logits[0, 0]
    assert mask.shape == (64, 64)
    assert mask[4 * 5 + 2, 4 * 10 + 2] > 0 and mask[4 * 14, 4 * 2] < 0
    assert mask[4 * 9 + 2, 4 * 12 + 2].item() == pytest.approx(6.0)  # 0.8 -> (0.8 - 0.5) / 0.5 * 10
    assert mask.min() == -10.0 and mask.max() <= 10.0


def test_missing_peaks_are_padding_not_negative():
    sim = torch.zeros(1, 1, GRID, GRID)
    sim[..., 5:7, 5:7] = 1.0  # smaller than one NMS window: room for one positive point only
    prompts = PromptGenerator(MatchingConfig(), SIZE)(sim, 1.0 - sim)
    assert prompts.point_labels[0].tolist() == [1, -1, 0]


def test_box_follows_the_best_component_only():
    sim = blob_map()
    sim[..., 12:15, 1:4] = 0.9  # a second, weaker match far away
    prompts = PromptGenerator(MatchingConfig(), SIZE)(sim, 1.0 - sim)
    assert prompts.boxes[0].tolist() == BLOB_BOX
    assert cell_of(prompts.point_coords[0, 1]) in {(r, c) for r in range(12, 15) for c in range(1, 4)}


def serpentine(size: int) -> torch.Tensor:
    """One 8-connected path zig-zagging over every 4th row: a component ~size^2 / 4 cells long."""
    region = torch.zeros(size, size, dtype=torch.bool)
    for row in range(0, size, 4):
        region[row] = True
        region[row + 1 : row + 4, size - 1 if row % 8 == 0 else 0] = True
    return region


@pytest.mark.parametrize("steps_per_check", [1, 4])
def test_component_matches_scipy_labelling(steps_per_check):
    generator = torch.Generator().manual_seed(0)
    regions = torch.stack([torch.rand(48, 48, generator=generator) > 0.45, serpentine(48),
                           torch.zeros(48, 48, dtype=torch.bool)])[:, None]
    seeds = torch.tensor([int(torch.nonzero(regions[0, 0].flatten())[7]), 0, 5])  # the last one is outside
    got = _component_at(regions, seeds, steps_per_check)
    for image, seed, component in zip(regions[:, 0].numpy(), seeds.tolist(), got[:, 0].numpy(), strict=True):
        labels, _ = ndimage.label(image, structure=np.ones((3, 3)))
        seed_label = labels.flat[seed]
        expected = labels == seed_label if seed_label else np.zeros_like(image)
        np.testing.assert_array_equal(component, expected)
    assert got[1].sum() == serpentine(48).sum()  # the whole path, reached through ~600 dilations


def test_batch_is_handled_per_image():
    first = blob_map()
    second = torch.zeros(1, 1, GRID, GRID)
    second[..., 0:2, 0:3] = 1.0
    prompts = PromptGenerator(MatchingConfig(n_pos=1, n_neg=0), SIZE)(
        torch.cat([first, second]), torch.zeros(2, 1, GRID, GRID)
    )
    assert prompts.point_coords.shape == (2, 1, 2)
    assert prompts.boxes.tolist() == [BLOB_BOX, [0, 0, 47, 31]]


def test_constant_similarity_gives_whole_image_and_neutral_mask():
    sim = torch.full((1, 1, GRID, GRID), 0.3)
    prompts = PromptGenerator(MatchingConfig(), SIZE)(sim, sim)
    assert prompts.boxes[0].tolist() == [0, 0, SIZE - 1, SIZE - 1]
    assert torch.all(prompts.mask_logits == 0)
    assert prompts.point_labels[0].tolist() == [1, 1, -1]  # no background cell outside the region


def test_prompts_from_matched_features_fall_inside_the_matched_region():
    """End to end on hand-built embeddings: matcher + prompts locate the known region."""
    target, template, mask, _ = synthetic_pair(seed=3)
    match = MaskedFeatureMatcher(top_k=5)(target, template[:, None], mask[:, None])
    prompts = PromptGenerator(MatchingConfig(), SIZE)(match.similarity, match.bg_similarity)
    inside = region_mask(TARGET_REGION)
    labels = prompts.point_labels[0].tolist()
    for xy, label in zip(prompts.point_coords[0], labels, strict=True):
        if label == 1:
            assert inside[cell_of(xy)]
        if label == 0:
            assert not inside[cell_of(xy)]
    assert labels[:2] == [1, 1]
    x0, y0, x1, y1 = prompts.boxes[0].tolist()
    rows, cols = TARGET_REGION
    assert (x0, y0) == (cols.start * 16, rows.start * 16)
    assert (x1, y1) == (cols.stop * 16 - 1, rows.stop * 16 - 1)


def test_on_a_fine_grid_radius_and_box_keep_their_pixel_meaning():
    """Similarity on the stride-4 grid (fine FPN levels): same blob, 4x the cells per side."""
    fine = blob_map().repeat_interleave(4, -2).repeat_interleave(4, -1)  # [1, 1, 64, 64]
    coarse_prompts = PromptGenerator(MatchingConfig(), SIZE)(blob_map(), 1.0 - blob_map())
    prompts = PromptGenerator(MatchingConfig(), SIZE)(fine, 1.0 - fine)
    assert prompts.boxes[0].tolist() == BLOB_BOX == coarse_prompts.boxes[0].tolist()
    first, second = prompts.point_coords[0, :2]
    assert cell_of(first) == (4, 9)  # in the peak's embedding cell
    assert in_blob(*cell_of(second))
    assert (first - second).abs().max() > 3 * 16  # suppression still spans 3 embedding cells
    assert prompts.mask_logits.shape == (1, 1, SIZE // 4, SIZE // 4)
    assert prompts.mask_logits[0, 0, 4 * 9, 4 * 12].item() == pytest.approx(6.0)
