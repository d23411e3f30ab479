"""What every stage-2 semi-supervised objective shares: options, data, EMA teacher, validation.

- Options: each method has an options dataclass (`Stage2Options` and subclasses); the spec's
  "options" are checked against it (unknown key or wrong type -> JobError naming it).
- Data: a labelled stream ("train" cases with segmentations) and an unlabelled stream ("train"
  cases without and "unlabelled" cases), each an `EpochBatches`; one step gets one batch of
  each: {"labelled": {...}, "unlabelled": {...}}.
- `Stage2Objective`: the student (`StudentUNet`), an EMA teacher (momentum min(1 − 1/(t+1), m)
  on parameters and buffers, `vessa.train.ema`), per-volume validation Dice of teacher
  ("dice", which picks best.pt) and student, and the checkpoint extras (teacher weights,
  student config). Methods implement `training_step`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from vessa.errors import CheckpointError, JobError
from vessa.jobs.spec import JobSpec
from vessa.train.augment import strong_augment, weak_augment
from vessa.train.data.batches import EpochBatches
from vessa.train.data.cohort import Cohort, CohortCase
from vessa.train.data.slices import SliceDataset
from vessa.train.distributed import Runtime
from vessa.train.ema import ema_update
from vessa.train.losses import ce_dice_loss
from vessa.train.metrics import dice_per_structure, volume_dice
from vessa.train.student import StudentConfig, StudentUNet
from vessa.train.training_checkpoint import load_model_weights


@dataclass
class Stage2Options:
    """Options every stage-2 method accepts (spec "options").

    channels/res_units/norm/dropout: the student (`StudentConfig`, strides 2; the defaults are
    the supervised method's network); threshold: pseudo-label confidence;
    unlabelled_batch_size: 0 = the spec's batch_size; weak/strong: augmentation on/off;
    cutmix: probability of a CutMix box per strong view (0 = off); ema_momentum: the
    teacher's maximum momentum; labelled_as_unlabelled: also feed labelled slices to the
    unlabelled stream; workers: DataLoader worker processes.
    """

    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0
    threshold: float = 0.95
    unlabelled_batch_size: int = 0
    weak: bool = True
    strong: bool = True
    cutmix: float = 0.5
    ema_momentum: float = 0.996
    labelled_as_unlabelled: bool = False
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("threshold", "cutmix"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise JobError(f"option {name!r} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise JobError(f"option 'ema_momentum' must be in [0, 1), got {self.ema_momentum!r}")
        if self.unlabelled_batch_size < 0 or self.workers < 0:
            raise JobError("options 'unlabelled_batch_size' and 'workers' must be >= 0")


Options = TypeVar("Options", bound=Stage2Options)


def _matches(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and all(_matches(v, default[0]) for v in value)
    if isinstance(default, dict):
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return isinstance(value, type(default))


def parse_options(cls: type[Options], spec: JobSpec) -> Options:
    """`cls` built from `spec.options`; JobError for an unknown option or a value of the wrong type."""
    known = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec.options) - set(known))
    if unknown:
        raise JobError(f"unknown option(s) {', '.join(unknown)} for method {spec.method!r}; "
                       f"options: {', '.join(known)}")
    for name, value in spec.options.items():
        if not _matches(value, known[name]):
            raise JobError(f"option {name!r} of method {spec.method!r} must be like {known[name]!r}, got {value!r}")
    values = {k: float(v) if isinstance(known[k], float) else v for k, v in spec.options.items()}
    return cls(**values)


class PairedBatches:
    """A `BatchFactory` giving {"labelled": batch, "unlabelled": batch} per step."""

    def __init__(self, labelled: EpochBatches, unlabelled: EpochBatches):
        self.labelled = labelled
        self.unlabelled = unlabelled

    def __call__(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        for labelled, unlabelled in zip(self.labelled(start_step), self.unlabelled(start_step), strict=True):
            yield {"labelled": labelled, "unlabelled": unlabelled}


def unlabelled_stream_cases(cohort: Cohort, options: Stage2Options) -> list[CohortCase]:
    """The cases of the unlabelled stream, in the order its "case" indices count them."""
    cases = cohort.select("train", labelled=False) + cohort.select("unlabelled")
    return cohort.select("train", labelled=True) + cases if options.labelled_as_unlabelled else cases


def stage2_batches(spec: JobSpec, runtime: Runtime, cohort: Cohort, options: Stage2Options) -> PairedBatches:
    """Labelled and unlabelled slice streams of the cohort (see the module docstring)."""
    labelled_cases = cohort.select("train", labelled=True)
    unlabelled_cases = unlabelled_stream_cases(cohort, options)
    if not unlabelled_cases:
        raise JobError(f"{cohort.path}: no unlabelled case (a \"train\" case without segmentation or an "
                       f"\"unlabelled\" case) for semi-supervised method {spec.method!r}")
    labelled = SliceDataset(cohort, labelled_cases, spec.structures, spec.image_size)
    unlabelled = SliceDataset(cohort, unlabelled_cases, spec.structures, spec.image_size, labelled=False)
    return PairedBatches(
        EpochBatches(labelled, spec.batch_size, spec.seed, runtime, options.workers,
                     what=f"{cohort.path} (labelled training slices)"),
        EpochBatches(unlabelled, options.unlabelled_batch_size or spec.batch_size, spec.seed + 1, runtime,
                     options.workers, what=f"{cohort.path} (unlabelled slices)"),
    )


class Stage2Objective:
    """Shared part of the stage-2 objectives (module docstring); subclasses add `training_step`."""

    def __init__(self, spec: JobSpec, runtime: Runtime, cohort: Cohort, options: Stage2Options):
        self.spec = spec
        self.options = options
        self.device = runtime.device
        self.structures = list(spec.structures)
        try:
            self.student_config = StudentConfig(
                class_names=["background", *self.structures], channels=options.channels,
                strides=[2] * (len(options.channels) - 1), res_units=options.res_units, norm=options.norm,
                dropout=options.dropout, image_size=spec.image_size)
        except CheckpointError as error:
            raise JobError(f"method {spec.method!r}: {error}") from None
        self.student = StudentUNet(self.student_config)
        if spec.init_checkpoint:
            load_model_weights(spec.init_checkpoint, "student", self.student)
        self.student.to(self.device)
        self.teacher = self.make_teacher(self.student)
        val_cases = cohort.select("val", labelled=True)
        self.val = SliceDataset(cohort, val_cases, self.structures, spec.image_size) if val_cases else None

    @staticmethod
    def make_teacher(model: nn.Module) -> nn.Module:
        """A frozen copy of `model`, in eval mode (the EMA teacher)."""
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        return teacher

    @property
    def classes(self) -> int:
        return self.student_config.num_classes

    def models(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.student.parameters())}]

    def labelled_views(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Weakly augmented labelled images [B,1,S,S] and labels [B,S,S]."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)[:, 0]
        if self.options.weak:
            images, labels = weak_augment(images, labels)
        return images, labels

    def unlabelled_weak(self, batch: dict[str, Any],
                        extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weak views [B,1,S,S] of the unlabelled images, and `extra` channels [B,E,S,S] (e.g.
        cached pseudo-label maps of the same slices) moved by the same geometric transform."""
        images = batch["image"].to(self.device, non_blocking=True)
        stacked = images if extra is None else torch.cat([images, extra.to(images)], dim=1)
        if self.options.weak:
            stacked, _ = weak_augment(stacked)
        return stacked[:, :1], None if extra is None else stacked[:, 1:]

    def strong(self, images: torch.Tensor) -> torch.Tensor:
        """A strong (photometric) view of weak views, or the views themselves if strong is off."""
        return strong_augment(images) if self.options.strong else images

    def supervised_loss(self, nets: Mapping[str, nn.Module], images: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE + Dice)/2 of the student on labelled views, and its logits."""
        logits = nets["student"](images)
        return ce_dice_loss(logits.float(), labels), logits

    def train_dice(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            dice = dice_per_structure(logits.argmax(1, keepdim=True), labels[:, None], self.classes)
        return float(torch.nanmean(dice))

    def after_step(self, step: int) -> None:
        """EMA teacher update after optimiser step `step`."""
        ema_update(self.teacher, self.student, step, self.options.ema_momentum)

    def evaluate(self) -> dict[str, float]:
        """Per-volume Dice on the "val" cases: teacher ("dice", "dice_<name>") and student."""
        if self.val is None:
            return {}
        self.student.eval()
        teacher = volume_dice(self.teacher, self.val, self.classes, self.spec.batch_size, self.device)
        student = volume_dice(self.student, self.val, self.classes, self.spec.batch_size, self.device)
        self.student.train()
        metrics = {"dice": float(torch.nanmean(teacher)), "dice_student": float(torch.nanmean(student))}
        metrics.update({f"dice_{name}": float(v) for name, v in zip(self.structures, teacher, strict=True)})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The EMA teacher and the student's config."""
        return {"teacher": self.teacher.state_dict(), "student_config": self.student_config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("student_config") != self.student_config.to_dict():
            raise JobError(f"checkpoint student config {state.get('student_config')} differs from the spec's "
                           f"{self.student_config.to_dict()}")
        self.teacher.load_state_dict(state["teacher"])
