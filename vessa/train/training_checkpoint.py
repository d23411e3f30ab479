"""Training checkpoints: everything needed to continue a run exactly, saved atomically.

A job folder holds `ckpt_step{N}.pt` (the newest `keep` of them), `last.pt` (a hard link to,
or copy of, the newest) and `best.pt` (the best validation metric so far). Every file is
written to a temporary name and renamed, so a crash or `kill -9` never leaves a partial
checkpoint under a final name. Files load with `torch.load(weights_only=True)`: they hold
only tensors, numbers, strings, lists and dicts (RNG states included).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vessa.errors import CheckpointError, torch_load_reason
from vessa.io.atomic import atomic_path

FORMAT = "vessa-training-state"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
_STEP_FILE = re.compile(r"^ckpt_step(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint taken after `step` optimiser steps."""
    return f"ckpt_step{step}.pt"


@dataclass
class TrainingState:
    """What a checkpoint holds. `rng` has one entry per rank (see `capture_rng`)."""

    step: int
    models: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    objective: dict[str, Any] = field(default_factory=dict)
    rng: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    best_metric: float | None = None


def capture_rng() -> dict[str, Any]:
    """The python, numpy, torch CPU and CUDA RNG states, as weights_only-loadable values."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def seed_all(seed: int) -> None:
    """Seed the python, numpy and torch (CPU and CUDA) global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by `capture_rng` (CUDA only if the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def find_checkpoints(job_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The `ckpt_step{N}.pt` files in `job_dir` as (step, path), oldest first."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        return []
    found = []
    for path in job_dir.iterdir():
        match = _STEP_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(job_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: the newest `ckpt_step{N}.pt`, else `last.pt`, else None."""
    found = find_checkpoints(job_dir)
    if found:
        return found[-1][1]
    last = Path(job_dir) / LAST
    return last if last.is_file() else None


def _publish(source: Path, dest: Path) -> None:
    """Atomically make `dest` a hard link to `source` (a copy where links are not supported)."""
    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def save_checkpoint(state: TrainingState, job_dir: str | os.PathLike, keep: int = 3,
                    best: bool = False) -> Path:
    """Write `ckpt_step{N}.pt`, point `last.pt` (and `best.pt` if `best`) at it, keep the newest `keep`."""
    job_dir = Path(job_dir)
    path = job_dir / checkpoint_name(state.step)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(state)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    _publish(path, job_dir / LAST)
    if best:
        _publish(path, job_dir / BEST)
    for _, old in find_checkpoints(job_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingState:
    """Load a training checkpoint (weights_only); a missing, corrupt or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(f"{path}: unreadable checkpoint ({torch_load_reason(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a VESSA training checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')!r}, "
                              f"this VESSA reads version {FORMAT_VERSION}")
    try:
        return TrainingState(**{k: v for k, v in payload.items() if k not in ("format", "format_version")})
    except TypeError as error:
        raise CheckpointError(f"{path}: checkpoint fields do not match ({error})") from None


def load_model_weights(path: str | os.PathLike, name: str, module: nn.Module) -> None:
    """Load model `name` of a training checkpoint into `module` (strict); CheckpointError if it does not fit."""
    state = load_checkpoint(path)
    if name not in state.models:
        raise CheckpointError(f"{path}: no model {name!r} (models: {', '.join(state.models) or 'none'})")
    try:
        module.load_state_dict(state.models[name])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: model {name!r} does not fit ({first})") from None
