"""What a training method provides to the one `Trainer`.

A method is an `Objective` (its models, loss and extra state) plus a `BatchFactory` (its
data), built from a `JobSpec` by a `SetupFactory`; `vessa.train.methods.METHODS` lists them
under "<stage>:<method>".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from vessa.jobs.spec import JobSpec
from vessa.train.data.batches import BatchFactory
from vessa.train.distributed import Runtime


class Objective(Protocol):
    """A training method, driven step by step by `vessa.train.trainer.Trainer`."""

    def models(self) -> dict[str, nn.Module]:
        """The trainable models by name (saved in checkpoints, wrapped in DDP when distributed)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups: {"params": [...], optional "lr_scale", "weight_decay"}."""

    def training_step(self, batch: Any, step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise for one batch and metrics to log (e.g. "dice").

        Forward passes that need gradients must call `nets[name]` (the DDP wrapper when
        distributed, the model itself otherwise), not the model directly. Random
        augmentation must use torch/numpy/python global RNGs, which checkpoints restore.
        Return the same metric keys at every step (NaN where undefined): ranks average them.
        """

    def after_step(self, step: int) -> None:
        """Called after each optimiser step (0-based `step`), e.g. for an EMA teacher update."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics on rank 0 at each checkpoint ({} if none); "dice" picks best.pt."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint (EMA teacher, ...), weights_only-loadable values only."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


@dataclass
class TrainingSetup:
    """A method ready to train: its objective and its data."""

    objective: Objective
    batches: BatchFactory


SetupFactory = Callable[[JobSpec, Runtime], TrainingSetup]
