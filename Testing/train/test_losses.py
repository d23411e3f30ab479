"""Training losses: sam2-style multimask loss and masked CE + Dice, known answers."""

import math

import pytest
import torch

from vessa.train.losses import ce_dice_loss, multimask_loss


def square(size=16, top=4, side=8) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., top:top + side, top:top + side] = 1
    return mask


def test_perfect_candidate_is_picked_and_costs_nothing():
    target = square()
    perfect = (target * 2 - 1) * 30  # logits: +30 inside, -30 outside
    wrong = -perfect
    logits = torch.cat([wrong, perfect, torch.zeros_like(perfect)], dim=1)  # [1, 3, 16, 16]
    iou_pred = torch.tensor([[0.0, 1.0, 0.0]])  # actual IoUs: 0, 1, 0 (zero logits predict nothing)
    loss, terms = multimask_loss(logits, iou_pred, torch.tensor([[30.0]]), target)
    assert terms["focal"] == pytest.approx(0.0, abs=1e-6)
    assert terms["dice_loss"] == pytest.approx(0.0, abs=0.02)  # smoothing keeps it just above 0
    assert terms["iou"] == pytest.approx(0.0, abs=1e-6)
    assert terms["object"] == pytest.approx(0.0, abs=1e-6)
    assert float(loss) < 0.05


def test_wrong_iou_prediction_and_absent_object_are_penalised():
    target = square()
    logits = ((target * 2 - 1) * 30).expand(1, 3, 16, 16)
    _, terms = multimask_loss(logits, torch.zeros(1, 3), torch.tensor([[-30.0]]), target)
    assert terms["iou"] == pytest.approx(1.0)
    assert terms["object"] == pytest.approx(30.0, rel=1e-3)


def test_empty_target_supervises_only_the_object_score():
    target = torch.zeros(1, 1, 16, 16)
    logits = torch.full((1, 3, 16, 16), 5.0, requires_grad=True)  # predicts everything
    loss, terms = multimask_loss(logits, torch.ones(1, 3), torch.tensor([[-20.0]]), target)
    assert terms["focal"] == terms["dice_loss"] == terms["iou"] == 0.0
    loss.backward()
    assert logits.grad.abs().sum() == 0  # mask terms masked out; only object BCE remains


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
