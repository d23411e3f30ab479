"""Infinite, seeded batch streams that can restart at any step and yield the same batches.

Epoch e is a shuffle drawn from (seed, e) alone (a `DistributedSampler` split across ranks),
so a job resumed at step n gets exactly the batches an uninterrupted run gets from step n on.
Datasets must be deterministic per index: random augmentation belongs in the objective's
`training_step`, whose RNG state is saved in every checkpoint.
"""

from __future__ import annotations

import itertools
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

    def sample_order(self, start_step: int) -> Iterator[int]:
        """Sample indices from batch `start_step` on, epoch after epoch, forever."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            yield from self.epoch_indices(epoch)[skip * self.batch_size:]
            epoch, skip = epoch + 1, 0

    def __call__(self, start_step: int = 0) -> Iterator[Any]:
        # One loader over all epochs (an epoch holds whole batches only, so no batch spans two):
        # its workers live as long as the run, where a loader per epoch would restart them every
        # epoch, which is every few steps with a handful of labelled volumes. A private generator:
        # building a loader must not draw from the global RNG, whose state is in the checkpoint.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + start_step)
        return iter(DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sample_order(start_step),
                               num_workers=self.num_workers, generator=generator,
                               pin_memory=self.runtime.device.type == "cuda"))


class _Steps(Dataset):
    """Item `step` is `make_batch(step)` (a map-style view, so DataLoader workers can build batches)."""

    def __init__(self, make_batch: Callable[[int], Any]):
        self.make_batch = make_batch

    def __getitem__(self, step: int) -> Any:
        return self.make_batch(step)


class StepBatches:
    """A `BatchFactory` over a pure function of the step (`make_batch(step)` -> one batch).

    With `num_workers` > 0 the batches are built ahead in DataLoader worker processes, in step
    order: the stream is the same as with 0 workers, so resume stays exact.
    """

    def __init__(self, make_batch: Callable[[int], Any], runtime: Runtime, num_workers: int = 0):
        if num_workers < 0:
            raise JobError(f"num_workers must be >= 0, got {num_workers}")
        self.make_batch = make_batch
        self.runtime = runtime
        self.num_workers = num_workers

    def __call__(self, start_step: int = 0) -> Iterator[Any]:
        if self.num_workers == 0:
            return map(self.make_batch, itertools.count(start_step))
        loader = DataLoader(_Steps(self.make_batch), batch_size=None, sampler=itertools.count(start_step),
                            num_workers=self.num_workers, pin_memory=self.runtime.device.type == "cuda")
        return iter(loader)
