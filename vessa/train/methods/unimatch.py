"""UniMatch V2 ("stage2:unimatch"), also the step of VESSA in the loop (`vessa_in_the_loop`).

One step, as `unimatch_v2.py` (docs/methods.md §3.1) on a 2D student:
    x, y  = weak(labelled);  u_w = weak(unlabelled);  u_s1, u_s2 = strong(u_w) twice
    p     = softmax(teacher(u_w))          (stage2:vessa: fused with VESSA's, `pseudo_labels`)
    ŷ, c  = argmax p, max p
    u_sk, ŷ_k, c_k = CutMix inside the batch (flip(0) pasted in box_k)
    o_x   = student(x);  o_s1, o_s2 = student(cat(u_s1, u_s2), complementary channel masks)
    L     = (L_x + (L_s1 + L_s2) / 2) / 2,  L_x = CE+Dice,  L_sk = CE+Dice on {c_k >= threshold}
    teacher <- EMA(student), momentum min(1 − 1/(t+1), 0.996), parameters and buffers.
Every piece is one switch in the spec's options (see `UniMatchOptions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vessa.jobs.spec import JobSpec
from vessa.train.augment import complementary_channel_masks, cutmix_boxes, mix_in_batch
from vessa.train.data.cohort import load_cohort
from vessa.train.distributed import Runtime
from vessa.train.losses import ce_dice_loss
from vessa.train.methods.stage2_base import Stage2Objective, Stage2Options, parse_options, stage2_batches
from vessa.train.objective import TrainingSetup


@dataclass
class UniMatchOptions(Stage2Options):
    """Stage-2 options plus complementary_dropout (on/off) and p_no_drop (pairs left intact)."""

    complementary_dropout: bool = True
    p_no_drop: float = 0.5


class UniMatchObjective(Stage2Objective):
    """UniMatch V2 step (module docstring)."""

    def pseudo_labels(self, unlabelled: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Weak views [B,1,S,S], their pseudo-label distribution [B,C,S,S] (the teacher's), and
        metrics to log (none)."""
        weak, _ = self.unlabelled_weak(unlabelled)
        with torch.no_grad():
            return weak, torch.softmax(self.teacher(weak).float(), dim=1), {}

    def training_step(self, batch: dict[str, Any], step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        options = self.options
        images, labels = self.labelled_views(batch["labelled"])
        weak, probs, vessa_metrics = self.pseudo_labels(batch["unlabelled"], step)
        conf, pseudo = probs.max(dim=1)
        batch_u, size = weak.shape[0], tuple(weak.shape[-2:])
        views, targets, confidences = [], [], []
        for _ in range(2):
            boxes = cutmix_boxes(batch_u, size, options.cutmix)
            view, target, confidence = mix_in_batch(boxes, self.strong(weak), pseudo, conf)
            views.append(view)
            targets.append(target)
            confidences.append(confidence)
        loss_x, logits_x = self.supervised_loss(nets, images, labels)
        mask = None
        if options.complementary_dropout:
            mask = torch.cat(complementary_channel_masks(batch_u, max(self.student.encoder_channels),
                                                         options.p_no_drop)).to(self.device)
        logits_u = nets["student"](torch.cat(views), channel_mask=mask).float().chunk(2)
        loss_u = sum(ce_dice_loss(logits, target, keep=confidence >= options.threshold)
                     for logits, target, confidence in zip(logits_u, targets, confidences, strict=True)) / 2
        loss = (loss_x + loss_u) / 2
        metrics = {"loss_x": float(loss_x.detach()), "loss_u": float(loss_u.detach()),
                   "confident": float((conf >= options.threshold).float().mean()),
                   "dice": self.train_dice(logits_x, labels), **vessa_metrics}
        return loss, metrics


def build_unimatch(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """UniMatch V2 on the cohort's labelled and unlabelled slices."""
    options = parse_options(UniMatchOptions, spec)
    cohort = load_cohort(spec.manifest, spec.structures)
    return TrainingSetup(UniMatchObjective(spec, runtime, cohort, options),
                         stage2_batches(spec, runtime, cohort, options))
