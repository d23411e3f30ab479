"""Infinite, seeded batch streams that can restart at any step and yield the same batches.

Epoch e is a shuffle drawn from (seed, e) alone (a `DistributedSampler` split across ranks),
so a job resumed at step n gets exactly the batches an uninterrupted run gets from step n on.
Datasets must be deterministic per index: random augmentation belongs in the objective's
`training_step`, whose RNG state is saved in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vessa.errors import JobError
from vessa.train.distributed import Runtime, epoch_sampler

BatchFactory = Callable[[int], Iterator[Any]]
"""`factory(start_step)` -> an endless iterator whose first item is the batch of `start_step`."""


class EpochBatches:
    """A `BatchFactory` over one dataset: batches of `batch_size` per rank, reshuffled per epoch."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, runtime: Runtime,
                 num_workers: int = 0, what: str = "dataset"):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.runtime = runtime
        self.num_workers = num_workers
        per_rank = len(dataset) // runtime.world_size
        self.steps_per_epoch = per_rank // batch_size
        if self.steps_per_epoch == 0:
            raise JobError(f"{what} has {len(dataset)} samples, fewer than batch_size ({batch_size}) x "
                           f"processes ({runtime.world_size}); lower batch_size or add data")

    def epoch_indices(self, epoch: int) -> list[int]:
        """The sample indices this rank uses in `epoch`, in order (whole batches only)."""
        indices = list(epoch_sampler(self.dataset, self.runtime, self.seed, epoch))
        return indices[: self.steps_per_epoch * self.batch_size]

    def __call__(self, start_step: int = 0) -> Iterator[Any]:
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            indices = self.epoch_indices(epoch)[skip * self.batch_size:]
            # A private generator: building a loader must not draw from the global RNG, whose
            # state is part of the checkpoint.
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=indices,
                                num_workers=self.num_workers, generator=generator,
                                pin_memory=self.runtime.device.type == "cuda")
            yield from loader
            epoch, skip = epoch + 1, 0

