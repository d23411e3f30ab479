"""DuSSS ("stage2:dusss"): text-guided Mean Teacher with dual contrastive learning and SSS.

Our adaptation of the paper's equations (docs/methods.md §2; why and what differs: docs/stage2.md).
The paper pairs each image with a report; a cohort has only structure names, so the image
side of each pair is a *region*: the student's bottleneck features pooled over one class of
one slice (ground truth on labelled slices, confident merged pseudo-labels on unlabelled
ones), and the text side is that class's name (class 0: "background") through the frozen
stage-1 text tower (MiniLM by default, cached) and a trainable projection.

    x, y = weak(labelled);  u_w = weak(unlabelled);  u_s = strong(u_w)
    teacher (EMA 0.99 of student + heads) on u_w: z_t, text logits z_text
    merged = softmax(z_t + z_text)  (σ(logit_t + logit_text) for one structure); text = softmax(z_text)
    L_sup  = CE+Dice(student(x), y)
    L_semi = ½ CE+Dice(student(u_s), merged ≥ thr) + ½ CE+Dice(student(u_s), text ≥ thr)
    L_cmc  = ½(I2T + T2I) InfoNCE of regions vs class texts with ŝim = 1 − (1 − cos)·D_SSS, τ learnable
    L_imc  = ½(I2I + T2T): student regions on u_s vs teacher regions on u_w; student vs teacher texts
    L_tg   = ½(I2T + T2I) InfoNCE of text-mask-pooled pixel embeddings vs class texts (TCL-style)
    L_pix  = CE of pixel-text logits against y / confident merged pseudo-labels (pixel-level contrast)
    L = L_sup + w_semi·L_semi + w_cmc·L_cmc + w_imc·L_imc + w_tg·(L_tg + L_pix)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vessa.errors import JobError
from vessa.jobs.spec import JobSpec
from vessa.train.data.cohort import Cohort, load_cohort
from vessa.train.distributed import Runtime
from vessa.train.ema import ema_update
from vessa.train.losses import ce_dice_loss
from vessa.train.methods.dusss_contrastive import (
    DuSSSHeads,
    HeadOutputs,
    SSSConstants,
    contrastive_logits,
    symmetric_nce,
)
from vessa.train.methods.stage2_base import Stage2Objective, Stage2Options, parse_options, stage2_batches
from vessa.train.objective import TrainingSetup


@dataclass
class DuSSSOptions(Stage2Options):
    """Stage-2 options (ema_momentum 0.99 here) plus the DuSSS switches.

    embed_dim: shared image/text space; sss: semantic similarity supervision on/off (off =
    plain cosine InfoNCE); sss_a/sss_b/sss_lambda: its constants; text_fusion: merge the
    teacher with the text mask; text_pseudo: the L_semi^text half; w_*: loss weights;
    texts: structure name -> text (default: the name); text_kind: "minilm" or "open_clip"
    (text_model/text_pretrained as `vessa.model.config.TextConfig`).
    """

    ema_momentum: float = 0.99
    embed_dim: int = 128
    sss: bool = True
    sss_a: float = 1 / 200
    sss_b: float = 4.0
    sss_lambda: float = 5.0
    text_fusion: bool = True
    text_pseudo: bool = True
    w_semi: float = 1.0
    w_cmc: float = 1.0
    w_imc: float = 1.0
    w_tg: float = 1.0
    texts: dict[str, str] = field(default_factory=dict)
    text_kind: str = "minilm"
    text_model: str = ""
    text_pretrained: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embed_dim < 1:
            raise JobError(f"option 'embed_dim' must be >= 1, got {self.embed_dim!r}")


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean CE over the pixels where `keep` is true (0 if none)."""
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    keep = keep.to(ce.dtype)
    return (ce * keep).sum() / keep.sum().clamp_min(1.0)


def _float(value: Any) -> Any:
    """Floating tensors (also inside a Gaussian pair) as float32; anything else unchanged."""
    if isinstance(value, tuple):
        return tuple(_float(v) for v in value)
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


class DuSSSObjective(Stage2Objective):
    """DuSSS on the shared stage-2 scaffolding (module docstring)."""

    def __init__(self, spec: JobSpec, runtime: Runtime, cohort: Cohort, options: DuSSSOptions):
        super().__init__(spec, runtime, cohort, options)
        from vessa.model.config import TextConfig
        from vessa.model.text import TextEncoder

        try:
            config = TextConfig(options.text_kind, options.text_model, options.text_pretrained)
        except ValueError as error:
            raise JobError(f"method 'dusss': {error}") from None
        texts = ["background", *(options.texts.get(name, name) for name in self.structures)]
        self.text_features = TextEncoder(config).encode(texts).to(self.device)
        self.heads = DuSSSHeads(self.student.encoder_channels[-1], self.text_features.shape[1], options.embed_dim,
                                gaussian=options.sss).to(self.device)
        self.teacher_heads = self.make_teacher(self.heads)
        self.sss = SSSConstants(options.sss_a, options.sss_b, options.sss_lambda)

    def models(self) -> dict[str, nn.Module]:
        return {"student": self.student, "heads": self.heads}

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.student.parameters())}, {"params": list(self.heads.parameters())}]

    @torch.no_grad()
    def teacher_outputs(self, weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher on weak views: merged pseudo-label distribution, text distribution [B,C,S,S],
        and its bottleneck [B,C4,h,w] (for the image-image regions)."""
        logits, features = self.teacher(weak, return_features=True)
        heads = self.teacher_heads
        z_text = heads.text_logits(features[-1], heads.text_proj(self.text_features), tuple(weak.shape[-2:]))
        merged = logits.float() + z_text.float() if self.options.text_fusion else logits.float()
        return torch.softmax(merged, dim=1), torch.softmax(z_text.float(), dim=1), features[-1]

    def contrastive(self, out: HeadOutputs, teacher_regions: torch.Tensor, teacher_text: torch.Tensor,
                    first_unlabelled: int) -> dict[str, torch.Tensor]:
        """L_cmc, L_imc and L_tg of the student's head outputs (in float32, outside autocast:
        D_SSS is an exponential of a ratio of distances)."""
        with torch.autocast(self.device.type, enabled=False):
            return self._contrastive(out, teacher_regions, teacher_text, first_unlabelled)

    def _contrastive(self, out: HeadOutputs, teacher_regions: torch.Tensor, teacher_text: torch.Tensor,
                     first_unlabelled: int) -> dict[str, torch.Tensor]:
        out = HeadOutputs(**{k: _float(v) for k, v in vars(out).items()})
        teacher_regions, teacher_text = teacher_regions.float(), teacher_text.float()
        classes = torch.arange(out.text.shape[0], device=out.text.device)
        tau = self.heads.tau
        cmc = symmetric_nce(contrastive_logits(out.regions, out.text, tau, out.region_gauss, out.text_gauss, self.sss),
                            out.region_class[:, None] == classes[None])
        unlabelled = out.regions[out.region_image >= first_unlabelled]
        diagonal = torch.eye(len(unlabelled), dtype=torch.bool, device=unlabelled.device)
        i2i = symmetric_nce(contrastive_logits(unlabelled, teacher_regions, tau), diagonal)
        t2t = symmetric_nce(contrastive_logits(out.text, teacher_text, tau),
                            torch.eye(len(classes), dtype=torch.bool, device=classes.device))
        tg = symmetric_nce(contrastive_logits(out.grounded, out.text, tau),
                           out.grounded_class[:, None] == classes[None])
        return {"cmc": cmc, "imc": 0.5 * (i2i + t2t), "tg": tg}

    def training_step(self, batch: dict[str, Any], step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        options = self.options
        images, labels = self.labelled_views(batch["labelled"])
        weak, _ = self.unlabelled_weak(batch["unlabelled"])
        strong = self.strong(weak)
        merged, text_probs, teacher_bottleneck = self.teacher_outputs(weak)
        conf_m, pseudo_m = merged.max(dim=1)
        conf_t, pseudo_t = text_probs.max(dim=1)
        keep_m, keep_t = conf_m >= options.threshold, conf_t >= options.threshold
        batch_l = images.shape[0]
        logits, features = nets["student"](torch.cat([images, strong]), return_features=True)
        logits = logits.float()
        region_labels = torch.cat([labels, pseudo_m])
        region_weight = torch.cat([torch.ones_like(labels, dtype=torch.float32), keep_m.float()])
        out = nets["heads"](features[-1], self.text_features, region_labels, region_weight, tuple(images.shape[-2:]))
        with torch.no_grad():
            t_regions, _, _ = self.teacher_heads.project_regions(teacher_bottleneck, pseudo_m, keep_m.float(),
                                                                 self.classes)
            t_text = self.teacher_heads.text_proj(self.text_features)
        loss_sup = ce_dice_loss(logits[:batch_l], labels)
        loss_semi = ce_dice_loss(logits[batch_l:], pseudo_m, keep=keep_m)
        if options.text_pseudo:
            loss_semi = 0.5 * (loss_semi + ce_dice_loss(logits[batch_l:], pseudo_t, keep=keep_t))
        terms = self.contrastive(out, t_regions, t_text, batch_l)
        terms["pix"] = masked_cross_entropy(out.text_logits.float(), region_labels, region_weight > 0)
        loss = (loss_sup + options.w_semi * loss_semi + options.w_cmc * terms["cmc"]
                + options.w_imc * terms["imc"] + options.w_tg * (terms["tg"] + terms["pix"]))
        metrics = {"loss_sup": float(loss_sup.detach()), "loss_semi": float(loss_semi.detach()),
                   **{f"loss_{name}": float(value.detach()) for name, value in terms.items()},
                   "tau": float(self.heads.tau.detach()), "confident": float(keep_m.float().mean()),
                   "dice": self.train_dice(logits[:batch_l], labels)}
        return loss, metrics

    def after_step(self, step: int) -> None:
        """EMA update of the teacher student and the teacher heads."""
        super().after_step(step)
        ema_update(self.teacher_heads, self.heads, step, self.options.ema_momentum)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "teacher_heads": self.teacher_heads.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.teacher_heads.load_state_dict(state["teacher_heads"])


def build_dusss(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """DuSSS on the cohort's labelled and unlabelled slices."""
    options = parse_options(DuSSSOptions, spec)
    cohort = load_cohort(spec.manifest, spec.structures)
    return TrainingSetup(DuSSSObjective(spec, runtime, cohort, options), stage2_batches(spec, runtime, cohort, options))
