"""Stage-1 training (stage "stage1", method "vessa"): the template-guided assistant, episodically.

Each step draws a batch of episodes (`vessa.train.data.episodes`): a target slice, K template
slices of the same structure (other subjects or re-deformed copies) and the structure's
name as text. The assistant is trained with sam2's multimask loss (`vessa.train.losses`). With
probability `rehearsal_probability` a step is a feedback rehearsal: the dense prompt is a
corrupted ground truth and up to 7 corrective clicks are added, so the model also learns to
refine a student's mask (stage 2 feeds student masks back this way). One pass per step:
the rehearsal replaces the template-derived prompt for that step instead of adding a second
decoder pass (docs/methods.md §1.2 adds a pass; one pass halves the CPU cost — a documented choice).

Options (spec "options"; defaults in DEFAULT_OPTIONS): "sam2_config" (tiny|small|base_plus|
large|half_tiny), "max_templates", "rehearsal_probability", "encoder_lr_scale" (x spec.lr for Hiera +
FPN), "new_lr_scale" (x spec.lr for the matching/text token layers), "freeze_encoder",
"synthetic_probability", "absent_probability" (target slices without the structure),
"val_episodes", "affine_scale" (x the episodes' random pose ranges), "location_prior" (initial
gate of the model's location prior, 0 = off; see `vessa.model.assistant`), "fine_levels" (FPN
levels matched besides the embedding, `MatchingConfig.fine_levels`), "workers" (processes
building episodes ahead of the training step, same stream as 0; for GPU runs, where building
episodes on the main process would leave the GPU waiting).
`init_checkpoint`: a VESSA or official SAM2.1 file.
Cases: the manifest's labelled "train" cases; "val" cases give the validation episodes.
Every segment of a case is a task unless `structures` names a subset ("*" = all).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vessa.errors import JobError
from vessa.io import read_segmentation, read_volume
from vessa.jobs.spec import STAGE1_EXPORT, JobSpec
from vessa.model.assistant import TemplateAssistant
from vessa.model.checkpoint import load_assistant, read_checkpoint, save_checkpoint
from vessa.model.config import FINE_LEVELS, SAM2_CONFIGS, SAM2_PRESETS, MatchingConfig, ModelConfig
from vessa.model.intensity import intensity_range, normalize_for_sam, to_unit_range
from vessa.model.slicing import array_spacing
from vessa.train.augment import corrupt_masks, error_clicks
from vessa.train.data.batches import StepBatches
from vessa.train.data.cohort import CohortCase, read_manifest
from vessa.train.data.episodes import EpisodeCase, EpisodeConfig, EpisodeSampler
from vessa.train.distributed import Runtime
from vessa.train.losses import multimask_loss
from vessa.train.metrics import dice
from vessa.train.objective import TrainingSetup

DEFAULT_OPTIONS: dict[str, Any] = {
    "sam2_config": "tiny",
    "max_templates": 3,
    "rehearsal_probability": 0.5,
    "encoder_lr_scale": 1.0,
    "new_lr_scale": 10.0,
    "freeze_encoder": False,
    "synthetic_probability": 0.5,
    "absent_probability": 0.25,
    "val_episodes": 16,
    "location_prior": 0.0,
    "fine_levels": list(FINE_LEVELS),
    "affine_scale": 1.0,
    "workers": 0,
}
REHEARSAL_CLICKS = 7


def _require_number(options: dict[str, Any], name: str, high: float, note: str = "") -> None:
    """JobError unless option `name` is a number (not a bool) in [0, high]."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise JobError(f"option {name!r} must be a number in [0, {high}]{note}, got {value!r}")


def stage1_options(spec: JobSpec) -> dict[str, Any]:
    """The spec's options over the defaults; JobError naming an unknown or bad option."""
    unknown = sorted(set(spec.options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise JobError(f"unknown option(s) {', '.join(unknown)} for stage1; options: {', '.join(DEFAULT_OPTIONS)}")
    options = {**DEFAULT_OPTIONS, **spec.options}
    variants = [*SAM2_CONFIGS, *SAM2_PRESETS]
    if options["sam2_config"] not in variants:
        raise JobError(f"option 'sam2_config' must be one of {', '.join(variants)}, got {options['sam2_config']!r}")
    _require_number(options, "affine_scale", 4)
    for name in ("rehearsal_probability", "synthetic_probability", "absent_probability"):
        if not isinstance(options[name], (int, float)) or not 0 <= options[name] <= 1:
            raise JobError(f"option {name!r} must be a number in [0, 1], got {options[name]!r}")
    _require_number(options, "location_prior", 20, " (0 = off)")
    try:
        MatchingConfig(fine_levels=options["fine_levels"])
    except (TypeError, ValueError) as error:
        raise JobError(f"option 'fine_levels' {options['fine_levels']!r}: {error}") from None
    for name, low in (("max_templates", 1), ("val_episodes", 1), ("workers", 0)):
        if not isinstance(options[name], int) or isinstance(options[name], bool) or options[name] < low:
            raise JobError(f"option {name!r} must be an integer >= {low}, got {options[name]!r}")
    if spec.image_size % 64:
        raise JobError(f"image_size {spec.image_size} must be a multiple of 64 for the sam2 encoder")
    return options


def episode_cases(cases: list[CohortCase], structures: list[str]) -> list[EpisodeCase]:
    """Cases read from disk, intensities scaled to [0, 1] by the model's intensity policy."""
    wanted = None if structures in ([], ["*"]) else set(structures)
    out = []
    for case in cases:
        image = read_volume(case.image)
        segmentation = read_segmentation(case.segmentation)
        image.require_same_grid(segmentation.geometry(), f"segmentation of case {case.id}")
        unit = to_unit_range(image.array, *intensity_range(image.array, case.modality))
        masks = {s.name: s.mask for s in segmentation.segments if wanted is None or s.name in wanted}
        if masks:
            out.append(EpisodeCase(case.id, unit, masks, case.modality, tuple(array_spacing(image.spacing))))
    return out


def init_assistant(config: ModelConfig, checkpoint: str | None) -> TemplateAssistant:
    """A new assistant, initialised from a VESSA or an official SAM2.1 checkpoint if given."""
    if not checkpoint:
        return TemplateAssistant(config)
    content = read_checkpoint(checkpoint)
    if "model" in content and "format" not in content:
        from vessa.model.checkpoint import load_sam2_official

        assistant = TemplateAssistant(config)
        load_sam2_official(assistant, checkpoint)
        return assistant
    assistant = load_assistant(checkpoint)
    layout = (config.sam2_config, config.sam2_overrides, config.image_size)
    if (assistant.config.sam2_config, assistant.config.sam2_overrides, assistant.config.image_size) != layout:
        raise JobError(f"{checkpoint}: model {assistant.config.sam2_config} {assistant.config.sam2_overrides} at "
                       f"{assistant.config.image_size} px does not match the job's {layout}")
    return assistant


def model_config(spec: JobSpec, options: dict[str, Any]) -> ModelConfig:
    """The model a job trains when it does not start from a VESSA checkpoint (`stage1_options`' options)."""
    return ModelConfig(sam2_config=options["sam2_config"], image_size=spec.image_size,
                       matching=MatchingConfig(fine_levels=options["fine_levels"]),
                       max_templates=options["max_templates"], location_prior=float(options["location_prior"]))


def _model_options(job: ModelConfig, loaded: ModelConfig) -> list[tuple[str, Any, Any]]:
    """(option, the job's value, the initialised model's value) of the options stored in the model."""
    return [("location_prior", job.location_prior, loaded.location_prior),
            ("fine_levels", job.matching.fine_levels, loaded.matching.fine_levels)]


class StageOneObjective:
    """sam2 multimask loss on template-guided episodes, with feedback rehearsal steps."""

    find_unused_parameters = True  # DDP: prompt embeddings used vary from step to step

    def __init__(self, spec: JobSpec, runtime: Runtime, options: dict[str, Any], val: EpisodeSampler | None):
        self.spec, self.options, self.device, self.val = spec, options, runtime.device, val
        config = model_config(spec, options)
        self.assistant = init_assistant(config, spec.init_checkpoint).to(self.device)
        for name, wanted, kept in _model_options(config, self.assistant.config):
            if name in spec.options and wanted != kept:
                raise JobError(f"option {name!r} {spec.options[name]} differs from the init checkpoint's model "
                               f"({kept}); leave the option out to keep the checkpoint's")
        used = {id(p) for params in self.assistant.parameter_groups().values() for p in params}
        for parameter in self.assistant.parameters():  # sam2 parts this model never runs
            parameter.requires_grad_(id(parameter) in used)
        if options["freeze_encoder"]:
            for parameter in self.assistant.parameter_groups()["encoder"]:
                parameter.requires_grad_(False)

    def models(self) -> dict[str, nn.Module]:
        return {"assistant": self.assistant}

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = self.assistant.parameter_groups()
        scales = {"encoder": self.options["encoder_lr_scale"], "new": self.options["new_lr_scale"]}
        return [{"params": [p for p in params if p.requires_grad], "lr_scale": scales.get(name, 1.0)}
                for name, params in groups.items() if any(p.requires_grad for p in params)]

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        target = normalize_for_sam(batch["image"].to(self.device))
        batch_size, count = batch["templates"].shape[:2]
        templates = normalize_for_sam(batch["templates"].to(self.device).flatten(0, 1))
        templates = templates.view(batch_size, count, *templates.shape[1:])
        return (target, templates, batch["template_masks"].to(self.device), batch["mask"].to(self.device),
                batch["location_prior"].to(self.device))

    def training_step(self, batch: dict[str, Any], step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        target, templates, template_masks, truth, prior = self._inputs(batch)
        mask_prompt = extra_points = None
        rehearsal = bool(torch.rand(()) < self.options["rehearsal_probability"])
        if rehearsal:
            corrupted = corrupt_masks(truth.cpu()).to(self.device)
            extra_points = error_clicks(corrupted, truth, REHEARSAL_CLICKS)
            mask_prompt = (corrupted * 2 - 1) * self.assistant.config.matching.mask_logit_scale
        out = nets["assistant"](target, templates, template_masks, batch["text"], mask_prompt, extra_points, prior)
        loss, terms = multimask_loss(out.logits, out.iou, out.object_score_logits, truth)
        with torch.no_grad():
            scores = dice(out.probabilities() >= 0.5, truth > 0.5, empty="match")
        return loss, {"dice": float(scores.mean()), "rehearsal": float(rehearsal), **terms}

    def after_step(self, step: int) -> None:
        """No per-step work (no teacher in stage 1)."""

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean Dice over fixed validation episodes (template-derived prompts only)."""
        if self.val is None:
            return {}
        self.assistant.eval()
        scores = []
        for index in range(self.options["val_episodes"]):
            batch = self.val.batch(index, 1)
            target, templates, template_masks, truth, prior = self._inputs(batch)
            out = self.assistant.predict(target, templates, template_masks, batch["text"], location_prior=prior)
            scores.append(dice(out.probabilities() >= 0.5, truth > 0.5, empty="match"))
        self.assistant.train()
        return {"dice": float(torch.cat(scores).mean())}

    def export(self, output_dir: Path, metadata: dict[str, Any]) -> Path:
        """Write the inference checkpoint `vessa_stage1.pt` the segmenter and the effect load."""
        return save_checkpoint(self.assistant, Path(output_dir) / STAGE1_EXPORT, metadata)

    def state_dict(self) -> dict[str, Any]:
        """No extra state beyond the assistant, which the trainer saves."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see `state_dict`)."""


def build_stage1(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """The stage-1 objective and its endless, per-rank, step-indexed episode batches."""
    options = stage1_options(spec)
    cohort = read_manifest(spec.manifest)
    config = EpisodeConfig(image_size=spec.image_size, max_templates=options["max_templates"],
                           synthetic_probability=options["synthetic_probability"],
                           absent_probability=options["absent_probability"],
                           affine_scale=float(options["affine_scale"]))
    train_cases = episode_cases(cohort.select("train", labelled=True), spec.structures)
    if not train_cases:
        raise JobError(f"{cohort.path}: no labelled training case holds any of the structures {spec.structures}")
    sampler = EpisodeSampler(train_cases, config, seed=spec.seed * 1000 + runtime.rank)
    val_cases = episode_cases(cohort.select("val", labelled=True), ["*"])
    val_config = EpisodeConfig(image_size=spec.image_size, max_templates=options["max_templates"],
                               affine_scale=float(options["affine_scale"]))
    val = EpisodeSampler(val_cases, val_config, seed=10_000 + spec.seed) if val_cases else None

    batches = StepBatches(functools.partial(sampler.batch, batch_size=spec.batch_size), runtime, options["workers"])
    return TrainingSetup(StageOneObjective(spec, runtime, options, val), batches)
