"""sam2-style multimask loss, mask corruption and error clicks: known answers."""

import pytest
import torch

from vessa.train.prompt_losses import corrupt_masks, error_clicks, multimask_loss


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
