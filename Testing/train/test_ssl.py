"""Shared semi-supervised parts: known answers on tiny tensors."""

import math

import pytest
import torch

from vessa.errors import InputError
from vessa.train.ssl import (
    ce_dice_loss,
    complementary_channel_masks,
    confident_mask,
    cutmix_box,
    cutmix_boxes,
    fuse_pseudo_labels,
    mix_in_batch,
    strong_augment,
    vessa_weight,
    weak_augment,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_confident_mask_thresholds_the_top_class():
    probs = torch.tensor([[0.96, 0.5, 0.2], [0.04, 0.5, 0.8]])[None, :, None, :]  # [1, 2, 1, 3]
    assert confident_mask(probs, 0.95).tolist() == [[[True, False, False]]]
    assert confident_mask(probs, 0.5).tolist() == [[[True, True, True]]]


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


def test_fuse_pseudo_labels_renormalises_vessa_background():
    teacher = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]
    vessa = torch.tensor([0.5, 0.5])[None, :, None, None]
    fused = fuse_pseudo_labels(teacher, vessa, w=1.0)
    assert torch.allclose(fused.flatten(), torch.tensor([0.2, 0.4, 0.4]))  # bg 0.25, sum 1.25
    fused = fuse_pseudo_labels(teacher, vessa, w=0.5)
    assert torch.allclose(fused.flatten(), torch.tensor([0.6, 0.2, 0.2]))
    assert torch.equal(fuse_pseudo_labels(teacher, vessa, w=0.0), teacher)
    with pytest.raises(InputError, match="background"):
        fuse_pseudo_labels(teacher, torch.zeros(1, 3, 1, 1), 0.5)


@pytest.mark.parametrize(
    ("step", "total", "expected"), [(0, 100, 1.0), (50, 100, 0.65), (100, 100, 0.3), (500, 100, 0.3)]
)
def test_vessa_weight_cosine(step, total, expected):
    assert vessa_weight(step, total) == pytest.approx(expected)


def test_ce_dice_loss_known_values():
    logits = torch.zeros(1, 2, 4, 4)  # p = 0.5 everywhere: CE = log 2 per pixel
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    keep = torch.zeros(1, 4, 4, dtype=torch.bool)
    keep[:, :2] = True
    # CE over all 16 valid pixels, 8 kept: log2/2; Dice on kept pixels: class 0 -> 1 - 2/3, class 1 -> 1
    assert ce_dice_loss(logits, target, keep).item() == pytest.approx((math.log(2) / 2 + 2 / 3) / 2, abs=1e-4)
    assert ce_dice_loss(logits, target, keep, valid=keep).item() == pytest.approx((math.log(2) + 2 / 3) / 2, abs=1e-4)
    assert ce_dice_loss(logits, target, torch.zeros_like(keep)).item() == pytest.approx(0.0, abs=1e-6)
    perfect = torch.stack([torch.full((4, 4), 20.0), torch.full((4, 4), -20.0)])[None]
    assert ce_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    logits.requires_grad_(True)
    ce_dice_loss(logits, target, keep).backward()
    assert logits.grad[:, :, 2:].abs().sum() == 0 and logits.grad[:, :, :2].abs().sum() > 0
