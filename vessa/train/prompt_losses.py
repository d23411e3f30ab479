"""Losses and prompt corruption for training a promptable mask decoder (sam2's recipe).

`multimask_loss` follows sam2's training loss: per candidate mask 20·focal (α .25, γ 2) +
1·Dice; only the candidate with the lowest mask loss is supervised; + 1·L1 between
predicted and actual IoU of every candidate; + 1·BCE of the object score. Mask and IoU terms
count only for samples whose target is not empty, as in sam2.
`corrupt_masks` / `error_clicks` make "student-like" mask prompts and corrective clicks for
the feedback rehearsal (METHODS §1.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torchvision.ops import sigmoid_focal_loss

LOSS_WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "object": 1.0}
_DICE = DiceLoss(sigmoid=True, reduction="none", smooth_nr=1.0, smooth_dr=1.0)


def multimask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, object_logits: torch.Tensor,
                   target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of M candidate masks: logits [B, M, H, W], iou_pred [B, M], object_logits [B, 1],
    target [B, 1, H, W] in {0, 1}. Returns the scalar loss and its terms as floats.
    Computed in float32 whatever the decoder's autocast dtype (bf16 sums over a mask lose precision)."""
    logits = logits.float()
    target = target.to(logits.dtype)
    expanded = target.expand_as(logits)
    focal = sigmoid_focal_loss(logits, expanded, alpha=0.25, gamma=2.0, reduction="none").flatten(2).mean(-1)
    dice = _DICE(logits, expanded).flatten(1)  # [B, M]
    mask_loss = LOSS_WEIGHTS["focal"] * focal + LOSS_WEIGHTS["dice"] * dice
    best = mask_loss.argmin(dim=1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    present = (target.flatten(1).amax(1) > 0).to(logits.dtype)  # [B]
    with torch.no_grad():
        predicted = logits > 0
        truth = expanded > 0.5
        inter = (predicted & truth).flatten(2).sum(-1).float()
        union = (predicted | truth).flatten(2).sum(-1).float().clamp(min=1.0)
        actual_iou = inter / union
    iou_loss = F.l1_loss(iou_pred.float(), actual_iou, reduction="none").mean(1)
    object_loss = F.binary_cross_entropy_with_logits(object_logits.float().squeeze(1), present.float())
    count = present.sum().clamp(min=1.0)
    terms = {
        "focal": (focal[rows, best] * present).sum() / count,
        "dice_loss": (dice[rows, best] * present).sum() / count,
        "iou": (iou_loss * present).sum() / count,
        "object": object_loss,
    }
    loss = (LOSS_WEIGHTS["focal"] * terms["focal"] + LOSS_WEIGHTS["dice"] * terms["dice_loss"]
            + LOSS_WEIGHTS["iou"] * terms["iou"] + LOSS_WEIGHTS["object"] * terms["object"])
    return loss, {name: float(value.detach()) for name, value in terms.items()}


def corrupt_masks(masks: torch.Tensor, generator: torch.Generator | None = None, max_radius: int = 5,
                  drop_probability: float = 0.3) -> torch.Tensor:
    """Student-like errors on masks [B, 1, H, W]: per sample a random dilation or erosion of
    1..max_radius px, and with `drop_probability` a random square hole cut out of it."""
    out = []
    for mask in masks.float():
        radius = int(torch.randint(1, max_radius + 1, (1,), generator=generator))
        kernel = 2 * radius + 1
        if torch.rand((), generator=generator) < 0.5:
            changed = F.max_pool2d(mask[None], kernel, stride=1, padding=radius)[0]
        else:
            changed = -F.max_pool2d(-mask[None], kernel, stride=1, padding=radius)[0]
        if torch.rand((), generator=generator) < drop_probability:
            h, w = mask.shape[-2:]
            side = int(torch.randint(max(2, h // 16), max(3, h // 4), (1,), generator=generator))
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            changed = changed.clone()
            changed[..., top:top + side, left:left + side] = 0
        out.append(changed)
    return torch.stack(out)


def error_clicks(prompt: torch.Tensor, target: torch.Tensor, count: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` corrective clicks per sample, drawn uniformly from the error region of a
    mask prompt [B, 1, H, W] vs target: a missed pixel gives a positive click (label 1), a
    false one a negative click (0). Returns coords [B, count, 2] (x, y in pixels, centres)
    and labels [B, count]; label -1 (sam2's "ignore") pads samples without errors."""
    batch, _, h, w = target.shape
    missed = (target > 0.5) & (prompt <= 0.5)
    false = (target <= 0.5) & (prompt > 0.5)
    errors = (missed | false).flatten(1).float()  # [B, H*W]
    has_error = errors.sum(1) > 0
    weights = torch.where(has_error[:, None], errors, torch.ones_like(errors))
    index = torch.multinomial(weights, count, replacement=True, generator=generator)  # [B, count]
    coords = torch.stack([(index % w).float() + 0.5, (index // w).float() + 0.5], dim=-1)
    labels = missed.flatten(1).gather(1, index).long()
    labels = torch.where(has_error[:, None], labels, torch.full_like(labels, -1))
    return coords, labels
