"""UniMatch V2 ("stage2:unimatch") and UniMatch V2 with VESSA in the loop ("stage2:vessa").

One step, as `unimatch_v2.py` (METHODS §3.1) on a 2D student:
    x, y  = weak(labelled);  u_w = weak(unlabelled);  u_s1, u_s2 = strong(u_w) twice
    p     = softmax(teacher(u_w))          (stage2:vessa: fused with VESSA, `fuse_pseudo_labels`)
    ŷ, c  = argmax p, max p
    u_sk, ŷ_k, c_k = CutMix inside the batch (flip(0) pasted in box_k)
    o_x   = student(x);  o_s1, o_s2 = student(cat(u_s1, u_s2), complementary channel masks)
    L     = (L_x + (L_s1 + L_s2) / 2) / 2,  L_x = CE+Dice,  L_sk = CE+Dice on {c_k >= threshold}
    teacher <- EMA(student), momentum min(1 − 1/(t+1), 0.996), parameters and buffers.
Every piece is one switch in the spec's options (see `UniMatchOptions` / `VessaOptions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vessa.errors import JobError
from vessa.jobs.spec import JobSpec
from vessa.train.augment import complementary_channel_masks, cutmix_boxes, mix_in_batch
from vessa.train.data.cohort import Cohort, load_cohort
from vessa.train.data.slices import SliceDataset
from vessa.train.distributed import Runtime
from vessa.train.losses import ce_dice_loss
from vessa.train.objective import TrainingSetup
from vessa.train.stage2 import Stage2Objective, Stage2Options, parse_options, stage2_batches
from vessa.train.vessa_labels import VessaRefiner, fuse_pseudo_labels, template_bank, vessa_weight


@dataclass
class UniMatchOptions(Stage2Options):
    """Stage-2 options plus complementary_dropout (on/off) and p_no_drop (pairs left intact)."""

    complementary_dropout: bool = True
    p_no_drop: float = 0.5


@dataclass
class VessaOptions(UniMatchOptions):
    """UniMatch options plus VESSA in the loop.

    vessa_checkpoint: stage-1 checkpoint (file or registry name); vessa_untrained: use a
    random assistant of vessa_image_size px instead (tests and plumbing only);
    vessa: false = fusion off (plain UniMatch with the same data path, for ablations);
    vessa_weight_start/end/steps: cosine schedule of VESSA's weight (steps 0 = spec.steps);
    vessa_refresh_every: steps a slice's VESSA map is reused; vessa_per_step: most slices
    VESSA runs on per step (0 = all that need it; the rest use cached maps or the teacher
    alone); vessa_templates: K;
    vessa_bank_size: template slices per structure; vessa_mask_prompt/points/box: prompts
    from the teacher; vessa_batch_size: slices per assistant call; vessa_texts: structure
    name -> description given to VESSA (default: the name).
    """

    vessa: bool = True
    vessa_checkpoint: str = ""
    vessa_untrained: bool = False
    vessa_image_size: int = 512
    vessa_weight_start: float = 1.0
    vessa_weight_end: float = 0.3
    vessa_weight_steps: int = 0
    vessa_refresh_every: int = 1
    vessa_per_step: int = 0
    vessa_templates: int = 3
    vessa_bank_size: int = 32
    vessa_mask_prompt: bool = True
    vessa_points: bool = True
    vessa_box: bool = True
    vessa_batch_size: int = 8
    vessa_texts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vessa and not self.vessa_checkpoint and not self.vessa_untrained:
            raise JobError("method 'vessa' needs option 'vessa_checkpoint' (a stage-1 checkpoint file or "
                           "registry name); 'vessa_untrained': true runs a random assistant (testing only)")
        for name in ("vessa_refresh_every", "vessa_templates", "vessa_bank_size", "vessa_batch_size"):
            if getattr(self, name) < 1:
                raise JobError(f"option {name!r} must be >= 1, got {getattr(self, name)!r}")
        if self.vessa_per_step < 0:
            raise JobError(f"option 'vessa_per_step' must be >= 0, got {self.vessa_per_step!r}")


class UniMatchObjective(Stage2Objective):
    """UniMatch V2 step (module docstring); with a `VessaRefiner`, VESSA-fused pseudo-labels."""

    def __init__(self, spec: JobSpec, runtime: Runtime, cohort: Cohort, options: UniMatchOptions,
                 refiner: VessaRefiner | None = None):
        super().__init__(spec, runtime, cohort, options)
        self.refiner = refiner

    def fusion_weight(self, step: int) -> float:
        options = self.options
        total = options.vessa_weight_steps or self.spec.steps
        return vessa_weight(step, total, options.vessa_weight_start, options.vessa_weight_end)

    def pseudo_labels(self, unlabelled: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Weak views [B,1,S,S], their pseudo-label distribution [B,C,S,S], and VESSA metrics
        (its weight and the fraction of slices it covered this step)."""
        vessa_maps, available = None, None
        if self.refiner is not None:
            keys = list(zip(unlabelled["case"].tolist(), unlabelled["slice"].tolist(), strict=True))
            vessa_maps, available = self.refiner.probabilities(unlabelled["image"], keys, self.teacher, step)
        weak, vessa_maps = self.unlabelled_weak(unlabelled, vessa_maps)
        with torch.no_grad():
            probs = torch.softmax(self.teacher(weak).float(), dim=1)
            if vessa_maps is None:
                return weak, probs, {}
            weight = self.fusion_weight(step)
            per_sample = (weight * available.float()).view(-1, 1, 1, 1)
            fused = fuse_pseudo_labels(probs, vessa_maps.clamp(0, 1), per_sample)
            return weak, fused, {"vessa_weight": weight, "vessa_coverage": float(available.float().mean())}

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


def load_vessa_assistant(options: VessaOptions):
    """The frozen stage-1 assistant named by the options."""
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.checkpoint import load_assistant
    from vessa.model.config import ModelConfig
    from vessa.weights import resolve_weights

    if options.vessa_checkpoint:
        return load_assistant(resolve_weights(options.vessa_checkpoint))
    return TemplateAssistant(ModelConfig(image_size=options.vessa_image_size))


def build_vessa(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """UniMatch V2 whose pseudo-labels are fused with VESSA's (METHODS §1.3)."""
    options = parse_options(VessaOptions, spec)
    cohort = load_cohort(spec.manifest, spec.structures)
    refiner = None
    if options.vessa:
        labelled = SliceDataset(cohort, cohort.select("train", labelled=True), spec.structures, spec.image_size)
        bank = template_bank(labelled, len(spec.structures) + 1, options.vessa_bank_size)
        texts = [options.vessa_texts.get(name, name) for name in spec.structures]
        refiner = VessaRefiner(load_vessa_assistant(options), bank, texts, runtime.device,
                               templates=options.vessa_templates, mask_prompt=options.vessa_mask_prompt,
                               points=options.vessa_points, box=options.vessa_box,
                               batch_size=options.vessa_batch_size, refresh_every=options.vessa_refresh_every,
                               per_step=options.vessa_per_step)
    return TrainingSetup(UniMatchObjective(spec, runtime, cohort, options, refiner),
                         stage2_batches(spec, runtime, cohort, options))
