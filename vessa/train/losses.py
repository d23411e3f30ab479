"""Training losses (MONAI and torchvision parts).

`multimask_loss` (stage 1) follows sam2's training loss of a promptable mask decoder: per
candidate mask 20·focal (α .25, γ 2) + 1·Dice; only the candidate with the lowest mask loss is
supervised; + 1·L1 between predicted and actual IoU of every candidate; + 1·BCE of the object
score. Mask and IoU terms count only for samples whose target is not empty, as in sam2.
`ce_dice_loss` (stage 2) is UniMatch's (CE + Dice) / 2 of class logits, restricted to kept
(e.g. confident) pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, MaskedDiceLoss
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


_MASKED_DICE = MaskedDiceLoss(include_background=True, softmax=True)


def ce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    keep: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(CE + Dice) / 2 of `logits [B, C, H, W]` against class indices `target [B, H, W]`.

    Pixels count where `keep` (e.g. confident pseudo-labels) is true; as UniMatch V2, the CE
    sum is divided by the number of `valid` pixels (not ignored), not of kept ones. Dice
    (MONAI `MaskedDiceLoss`, softmax, background included) sees only kept pixels.
    """
    keep_f = torch.ones_like(target, dtype=logits.dtype) if keep is None else keep.to(logits.dtype)
    valid_f = torch.ones_like(keep_f) if valid is None else valid.to(logits.dtype)
    target = target.long()
    ce = F.cross_entropy(logits, target.clamp(0, logits.shape[1] - 1), reduction="none")
    ce = (ce * keep_f * valid_f).sum() / valid_f.sum().clamp_min(1.0)
    onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    dice = _MASKED_DICE(logits, onehot, mask=(keep_f * valid_f)[:, None])
    return (ce + dice) / 2
