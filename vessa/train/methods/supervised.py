"""Supervised 2D segmentation (method "supervised"): a MONAI UNet on labelled training slices.

The baseline every semi-supervised method is compared with, and the smallest real objective
for the trainer. Loss: MONAI DiceCELoss (softmax over background + structures). Augmentation:
random horizontal/vertical flips. Validation: per-volume Dice of each structure on the "val"
cases, computed at image_size (slices resized as in training).

Options (spec "options"): "channels" (UNet channels per level, default [16, 32, 64, 128];
image_size must be divisible by 2^(levels-1)), "res_units" (residual units per block,
default 2), "workers" (DataLoader worker processes, default 0), "augment" (default true).
Recipes: "default" only. `init_checkpoint` may name a training checkpoint with a "student".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from vessa.errors import JobError
from vessa.jobs.spec import JobSpec
from vessa.train.augment import random_flips
from vessa.train.data.batches import EpochBatches
from vessa.train.data.cohort import Cohort, load_cohort
from vessa.train.data.slices import SliceDataset
from vessa.train.distributed import Runtime
from vessa.train.metrics import dice_per_structure, volume_dice
from vessa.train.objective import TrainingSetup
from vessa.train.training_checkpoint import load_model_weights

DEFAULT_OPTIONS: dict[str, Any] = {"channels": [16, 32, 64, 128], "res_units": 2, "workers": 0, "augment": True}
RECIPES = ("default",)


def supervised_options(spec: JobSpec) -> dict[str, Any]:
    """The spec's options merged over the defaults; JobError naming a bad or unknown option."""
    unknown = sorted(set(spec.options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise JobError(f"unknown option(s) {', '.join(unknown)} for method 'supervised'; "
                       f"options: {', '.join(DEFAULT_OPTIONS)}")
    options = {**DEFAULT_OPTIONS, **spec.options}
    channels = options["channels"]
    if (not isinstance(channels, list) or len(channels) < 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)):
        raise JobError(f"option 'channels' must be a list of >= 2 positive integers, got {channels!r}")
    for name in ("res_units", "workers"):
        value = options[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise JobError(f"option {name!r} must be an integer >= 0, got {value!r}")
    if not isinstance(options["augment"], bool):
        raise JobError(f"option 'augment' must be true or false, got {options['augment']!r}")
    factor = 2 ** (len(channels) - 1)
    if spec.image_size % factor:
        raise JobError(f"image_size {spec.image_size} must be divisible by {factor} for a UNet with "
                       f"{len(channels)} levels")
    if spec.recipe not in RECIPES:
        raise JobError(f"recipe {spec.recipe!r} is not known for method 'supervised'; recipes: "
                       f"{', '.join(RECIPES)}")
    return options


class SupervisedObjective:
    """Cross-entropy + Dice training of a 2D MONAI UNet "student"."""

    def __init__(self, spec: JobSpec, runtime: Runtime, cohort: Cohort, options: dict[str, Any]):
        self.spec = spec
        self.device = runtime.device
        self.structures = list(spec.structures)
        self.classes = len(self.structures) + 1
        self.augment = options["augment"]
        channels = options["channels"]
        self.student = UNet(spatial_dims=2, in_channels=1, out_channels=self.classes, channels=channels,
                            strides=[2] * (len(channels) - 1), num_res_units=options["res_units"])
        if spec.init_checkpoint:
            load_model_weights(spec.init_checkpoint, "student", self.student)
        self.student.to(self.device)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        val_cases = cohort.select("val", labelled=True)
        self.val = SliceDataset(cohort, val_cases, self.structures, spec.image_size) if val_cases else None

    def models(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.student.parameters())}]

    def training_step(self, batch: dict[str, Any], step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        if self.augment:
            images, labels = random_flips(images, labels)
        logits = nets["student"](images)
        loss = self.loss(logits.float(), labels)
        with torch.no_grad():
            dice = dice_per_structure(logits.argmax(1, keepdim=True), labels, self.classes)
        return loss, {"dice": float(torch.nanmean(dice))}

    def after_step(self, step: int) -> None:
        """No per-step work: the supervised baseline has no teacher."""

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean per-volume Dice over the "val" cases ("dice") and per structure ("dice_<name>")."""
        if self.val is None:
            return {}
        self.student.eval()
        per_structure = volume_dice(self.student, self.val, self.classes, self.spec.batch_size, self.device)
        self.student.train()
        metrics = {"dice": float(torch.nanmean(per_structure))}
        metrics.update({f"dice_{name}": float(v) for name, v in zip(self.structures, per_structure, strict=True)})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """No extra state beyond the student, which the trainer saves."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see `state_dict`)."""


def build_supervised(spec: JobSpec, runtime: Runtime) -> TrainingSetup:
    """The supervised objective and its batches of labelled training slices."""
    options = supervised_options(spec)
    cohort = load_cohort(spec.manifest, spec.structures)
    train = SliceDataset(cohort, cohort.select("train", labelled=True), spec.structures, spec.image_size)
    batches = EpochBatches(train, spec.batch_size, spec.seed, runtime, num_workers=options["workers"],
                           what=f"{cohort.path} (labelled training slices)")
    return TrainingSetup(SupervisedObjective(spec, runtime, cohort, options), batches)
