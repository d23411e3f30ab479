"""Data-parallel training under torchrun: process group, device, collectives, samplers.

Without torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) everything here works
as a single process and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from vessa.errors import JobError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among `world_size` processes and its torch device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def env_rank() -> int:
    """This process's rank from torchrun's RANK variable (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on rank 0 (or when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_rank() == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK if CUDA is available else cpu; 'cuda' without CUDA raises JobError."""
    if device not in ("auto", "cpu", "cuda"):
        raise JobError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise JobError("device 'cuda' was requested but torch.cuda.is_available() is False")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> Runtime:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) if WORLD_SIZE > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
    return Runtime(rank, world_size, local_rank, torch_device)


def shutdown() -> None:
    """Leave the process group (if any), so the process exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        dist.barrier()


def all_reduce_mean(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean over ranks of each metric (every rank must pass the same keys)."""
    if not _active() or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist(), strict=True))


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag, True if it is True on any rank (one collective for all of them)."""
    if not _active():
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def gather_objects(obj: Any) -> list[Any]:
    """`obj` from every rank, in rank order (a one-element list in a single process)."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def epoch_sampler(dataset: Dataset, runtime: Runtime, seed: int, epoch: int) -> DistributedSampler:
    """This rank's shuffled share of `dataset` for `epoch`, a pure function of (seed, epoch).

    Every rank gets the same number of samples (the remainder is dropped), so ranks take the
    same number of steps per epoch.
    """
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return sampler
