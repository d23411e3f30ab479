"""Augmentation (views, CutMix, dropout masks, student-like prompts): known answers on tiny tensors."""


import pytest
import torch

from vessa.errors import InputError
from vessa.train.augment import (
    complementary_channel_masks,
    corrupt_masks,
    cutmix_box,
    cutmix_boxes,
    error_clicks,
    mix_in_batch,
    strong_augment,
    weak_augment,
)


def square(size=16, top=4, side=8) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., top:top + side, top:top + side] = 1
    return mask


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cutmix_box_is_empty_without_chance_and_a_rectangle_with():
    assert not cutmix_box((32, 32), p=0.0, generator=gen()).any()
    for seed in range(20):
        box = cutmix_box((32, 48), p=1.0, generator=gen(seed))
        rows, cols = box.any(1).nonzero()[:, 0], box.any(0).nonzero()[:, 0]
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert box.sum() == h * w  # a filled rectangle
        assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        area = box.float().mean().item()
        assert 0.01 < area <= 0.4
        assert 0.3 * 0.7 < h / w < 3.3 / 0.7  # int() truncation loosens the aspect slightly


def test_cutmix_boxes_are_reproducible_and_independent():
    a, b = cutmix_boxes(6, (16, 16), p=1.0, generator=gen(3)), cutmix_boxes(6, (16, 16), p=1.0, generator=gen(3))
    assert torch.equal(a, b)
    assert len({tuple(box.flatten().tolist()) for box in a}) > 1


def test_mix_in_batch_pastes_the_flipped_sample_inside_the_box():
    image = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    label = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)])
    boxes = torch.zeros(2, 2, 2, dtype=torch.bool)
    boxes[0, 0, 0] = True
    boxes[1, 1, 1] = True
    mixed_image, mixed_label = mix_in_batch(boxes, image, label)
    assert mixed_image[:, 0].tolist() == [[[2, 1], [1, 1]], [[2, 2], [2, 1]]]
    assert mixed_label.tolist() == [[[1, 0], [0, 0]], [[1, 1], [1, 0]]]
    with pytest.raises(InputError, match="does not match"):
        mix_in_batch(boxes, torch.zeros(2, 3, 3))


def test_complementary_masks_split_channels_between_the_two_views():
    m1, m2 = complementary_channel_masks(8, 64, p_no_drop=0.5, generator=gen())
    assert m1.shape == m2.shape == (8, 64)
    assert torch.equal(m1 + m2, torch.full((8, 64), 2.0))
    kept = (m1 == 1).all(1)
    assert kept.sum() == 4 and (m1[kept] == 1).all() and (m2[kept] == 1).all()
    dropped = m1[~kept]
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    assert not ((m1[~kept] > 0) & (m2[~kept] > 0)).any()  # disjoint channel sets
    assert 0.3 < (dropped == 2).float().mean() < 0.7
    m1, _ = complementary_channel_masks(4, 16, p_no_drop=0.0, generator=gen())
    assert not (m1 == 1).any()


def test_weak_augment_moves_image_and_label_together():
    label = torch.zeros(8, 24, 24, dtype=torch.long)
    label[:, 3:12, 5:20] = 1
    label[:, 14:22, 2:9] = 2
    image = label[:, None].float() / 2
    changed = 0
    for seed in range(3):
        out_image, out_label = weak_augment(image, label, generator=gen(seed))
        assert out_image.shape == image.shape and out_label.dtype == torch.long
        agree = (torch.round(out_image[:, 0] * 2).long() == out_label).float().mean(dim=(1, 2))
        assert (agree > 0.9).all()
        changed += (out_label != label).flatten(1).any(1).sum().item()
    assert changed >= 8  # about 3/4 of the samples move
    alone, none = weak_augment(image, generator=gen(0))
    assert none is None and torch.equal(alone, weak_augment(image, label, generator=gen(0))[0])
    with pytest.raises(InputError, match="square"):
        weak_augment(torch.zeros(1, 1, 4, 6))


def test_strong_augment_is_photometric_and_reproducible():
    image = torch.zeros(4, 1, 32, 32)
    image[:, :, 10:20, 12:22] = 0.8
    assert torch.equal(strong_augment(image, p_jitter=0, p_blur=0, p_noise=0, generator=gen()), image)
    a, b = strong_augment(image, generator=gen(5)), strong_augment(image, generator=gen(5))
    assert torch.equal(a, b) and not torch.equal(a, image)
    blurred = strong_augment(image, p_jitter=0, p_blur=1, p_noise=0, generator=gen())
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for sample in blurred[:, 0]:
        centre = ((sample * ys).sum() / sample.sum(), (sample * xs).sum() / sample.sum())
        assert abs(centre[0] - 14.5) < 0.2 and abs(centre[1] - 16.5) < 0.2


def test_corrupt_masks_changes_the_boundary_only():
    torch.manual_seed(0)
    masks = square(32, 8, 16).repeat(6, 1, 1, 1)
    corrupted = corrupt_masks(masks, max_radius=3, drop_probability=0.0)
    changed = (corrupted != masks).flatten(1).sum(1)
    assert (changed > 0).all()
    # a 1..3 px dilation/erosion of a 16 px square changes at most a 3 px ring around its edge
    assert (changed <= (22 * 22 - 16 * 16)).all()
    assert set(corrupted.unique().tolist()) <= {0.0, 1.0}


def test_error_clicks_positive_in_missed_negative_in_false_region():
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, :, :8] = 1  # left half
    prompt = torch.zeros_like(target)
    prompt[0, :, :, 4:12] = 1  # sample 0: misses columns 0..3, false on 8..11
    prompt[1] = target[1]  # sample 1: perfect prompt -> no clicks
    coords, labels = error_clicks(prompt, target, count=7)
    assert coords.shape == (2, 7, 2) and labels.shape == (2, 7)
    x = coords[0, :, 0]
    assert ((labels[0] == 1) == (x < 4)).all() and ((labels[0] == 0) == (x > 8)).all()
    assert (labels[1] == -1).all()
