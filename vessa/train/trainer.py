"""The one training loop every method shares; a method is an `Objective` (vessa.train.objective).

Per step: cancel / time-budget check (agreed across ranks), batch, forward under bf16 autocast
on CUDA, NaN/inf check (agreed across ranks), backward, gradient clipping, AdamW step, lr
schedule step, `after_step` (EMA). Every `log_every` steps a `progress` event and a
metrics.csv row (means over the interval and the ranks, with `data_wait_s`, the seconds spent
waiting for the batch, and `step_s`, the seconds of the step itself); every `checkpoint_every` steps, on
cancel, on a spent time budget and at the end: validation (rank 0), checkpoint, curves.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from vessa.errors import CheckpointError, JobError
from vessa.jobs.cancel import CancelFlag
from vessa.jobs.progress import ProgressWriter
from vessa.jobs.spec import JobSpec
from vessa.jobs.status import StatusFile
from vessa.train import distributed
from vessa.train.distributed import Runtime
from vessa.train.history import MetricHistory
from vessa.train.methods import build_setup
from vessa.train.objective import TrainingSetup
from vessa.train.optim import build_optimizer, build_scheduler
from vessa.train.training_checkpoint import (
    TrainingState,
    capture_rng,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    seed_all,
)

# Spec fields a resumed run must share with its checkpoint (others, e.g. steps, may change).
RESUME_FIXED = ("stage", "method", "structures", "image_size", "batch_size", "seed", "lr", "weight_decay",
                "schedule", "warmup_steps", "recipe", "options")


@dataclass(frozen=True)
class RunResult:
    """How a run ended: "finished", "time_budget" or "cancelled", at `step`, with its last checkpoint."""

    reason: str
    step: int
    checkpoint: Path

    @property
    def cancelled(self) -> bool:
        """True if the run stopped because a cancel was requested."""
        return self.reason == "cancelled"


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class Trainer:
    """Runs `setup.objective` on `setup.batches` for `spec.steps` optimiser steps."""

    def __init__(self, spec: JobSpec, setup: TrainingSetup, runtime: Runtime,
                 progress: ProgressWriter | None = None, cancel: CancelFlag | None = None,
                 status: StatusFile | None = None, clock=time.monotonic):
        self.spec = spec
        self.objective = setup.objective
        self.batches = setup.batches
        self.runtime = runtime
        self.job_dir = Path(spec.output_dir)
        self.progress = progress or ProgressWriter(spec.stage, spec.steps, enabled=runtime.is_main)
        self.cancel = cancel or CancelFlag()
        self.status = status or StatusFile(self.job_dir, enabled=runtime.is_main)
        self.clock = clock
        self.models = self.objective.models()
        self.nets = {name: self._wrap(model) for name, model in self.models.items()}
        self.optimizer = build_optimizer(self.objective.parameter_groups(), spec.lr, spec.weight_decay)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = build_scheduler(self.optimizer, spec.steps, spec.warmup_steps, spec.schedule)
        self.history = MetricHistory(self.job_dir)
        self.step = 0
        self.best_metric: float | None = None
        self.last_checkpoint: Path | None = None
        self.validation: dict[str, float] = {}
        self._saved_step: int | None = None

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.runtime.distributed:
            return model
        device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
        # Promptable decoders touch a different subset of prompt embeddings at each step.
        unused = bool(getattr(self.objective, "find_unused_parameters", False))
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)

    def _autocast(self):
        if self.spec.amp and self.runtime.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- checkpoints -------------------------------------------------------------------------

    def state(self) -> TrainingState:
        """The full training state (collective: every rank must call it, for the RNG states)."""
        return TrainingState(
            step=self.step,
            models={name: model.state_dict() for name, model in self.models.items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            objective=self.objective.state_dict(),
            rng=distributed.gather_objects(capture_rng()),
            config=self.spec.to_dict(),
            best_metric=self.best_metric,
        )

    def load(self, path: Path) -> None:
        """Continue from checkpoint `path`: models, optimiser, schedule, objective state, RNGs, history."""
        state = load_checkpoint(path)
        current = self.spec.to_dict()
        for key in RESUME_FIXED:
            if state.config.get(key) != current[key]:
                raise JobError(f"{path} was trained with {key}={state.config.get(key)!r} but the spec says "
                               f"{current[key]!r}; restore the spec or start in a new output_dir")
        for name, model in self.models.items():
            if name not in state.models:
                raise CheckpointError(f"{path}: no model {name!r} (models: {', '.join(state.models)})")
            model.load_state_dict(state.models[name])
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.objective.load_state_dict(state.objective)
        if len(state.rng) != self.runtime.world_size:
            self.progress.log(f"{path} was saved by {len(state.rng)} process(es), this run has "
                              f"{self.runtime.world_size}: random streams will differ from the original run")
        restore_rng(state.rng[self.runtime.rank % len(state.rng)])
        self.step, self.best_metric = state.step, state.best_metric
        self.last_checkpoint, self._saved_step = Path(path), state.step
        if self.runtime.is_main:
            self.history.load(up_to_step=state.step)

    def checkpoint(self) -> Path:
        """Validate (rank 0), save the state as ckpt_step{N}.pt, update curves and status."""
        if self._saved_step == self.step and self.last_checkpoint is not None:
            return self.last_checkpoint
        metrics = self.objective.evaluate() if self.runtime.is_main else {}
        for model in self.models.values():
            model.train()
        validation = self.validation = {f"val_{name}": value for name, value in metrics.items()}
        best = "dice" in metrics and math.isfinite(metrics["dice"]) and (
            self.best_metric is None or metrics["dice"] > self.best_metric)
        if best:
            self.best_metric = metrics["dice"]
        state = self.state()
        path = self.job_dir / checkpoint_name(self.step)
        if self.runtime.is_main:
            save_checkpoint(state, self.job_dir, keep=self.spec.keep_checkpoints, best=best)
            export = getattr(self.objective, "export", None)  # an inference checkpoint, if the method has one
            if export is not None and (best or "dice" not in metrics):
                exported = export(self.job_dir, {"step": self.step, "recipe": self.spec.recipe, **validation})
                self.progress.log(f"exported {exported} (step {self.step})")
            if validation:
                self.history.add(self.step, validation)
            self.history.write()
            self.progress.checkpoint(self.step, str(path), **validation)
            self.status.update(step=self.step, last_checkpoint=str(path))
        distributed.barrier()
        self.last_checkpoint, self._saved_step = path, self.step
        return path

    # --- the loop ----------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimiser step on `batch` (forward, NaN/inf check across ranks, backward, clipping,
        AdamW, lr schedule, `after_step`); returns the step's loss, metrics, grad norm and lr."""
        with self._autocast():
            loss, metrics = self.objective.training_step(batch, self.step, self.nets)
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        (any_bad,) = distributed.any_rank([local_bad], self.runtime.device)
        if any_bad:
            kind = ("NaN" if torch.isnan(loss.detach()).any() else "inf") if local_bad else "NaN/inf"
            last = self.last_checkpoint or "none (no checkpoint was saved yet)"
            raise JobError(f"loss became {kind} at step {self.step + 1}; last good checkpoint: {last}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        values = {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
        if self.spec.grad_clip > 0:
            values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.spec.grad_clip))
        self.optimizer.step()
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.objective.after_step(self.step)
        return values

    def _log(self, window: list[dict[str, float]]) -> None:
        keys = list(dict.fromkeys(k for values in window for k in values))
        means = {k: _nanmean([v[k] for v in window if k in v]) for k in keys}
        means = distributed.all_reduce_mean(means, self.runtime.device)
        means = {k: means[k] for k in keys}
        if self.runtime.is_main:
            self.history.add(self.step, means)
            self.progress.progress(self.step, means)
        window.clear()

    def _stop(self, reason: str, window: list[dict[str, float]], message: str | None = None) -> RunResult:
        if window:
            self._log(window)
        path = self.checkpoint()
        if reason == "cancelled":
            self.progress.cancelled(self.step, str(path))
            self.status.update("cancelled", step=self.step)
        else:
            if message:
                self.progress.log(message)
            self.progress.finished(self.step, str(path), reason=reason, **self.validation)
            self.status.update("finished", step=self.step)
        return RunResult(reason, self.step, path)

    def run(self, resume_from: Path | None = None) -> RunResult:
        """Train from scratch, or continue from checkpoint `resume_from`, until done, cancelled or out of time."""
        if resume_from is not None:
            self.load(resume_from)
        else:
            # Same model init on every rank came from the seed; now give each rank its own stream.
            seed_all(self.spec.seed + self.runtime.rank)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.status.update("running", stage=self.spec.stage, method=self.spec.method, step=self.step,
                           total=self.spec.steps,
                           last_checkpoint=None if self.last_checkpoint is None else str(self.last_checkpoint))
        self.progress.started(self.step, method=self.spec.method, world_size=self.runtime.world_size,
                              device=str(self.runtime.device), job_dir=str(self.job_dir),
                              resumed_from=None if resume_from is None else str(resume_from))
        for model in self.models.values():
            model.train()
        batches = self.batches(self.step)
        started = self.clock()
        budget = self.spec.time_budget_s
        window: list[dict[str, float]] = []
        while self.step < self.spec.steps:
            cancel, out_of_time = distributed.any_rank(
                [self.cancel.requested, budget is not None and self.clock() - started > budget],
                self.runtime.device)
            if cancel:
                return self._stop("cancelled", window)
            if out_of_time:
                return self._stop("time_budget", window, f"time budget of {budget} s reached at step {self.step}")
            waiting = time.perf_counter()
            batch = next(batches)
            computing = time.perf_counter()
            values = self.train_step(batch)  # its float() reads wait for the device: step_s covers GPU time
            values.update(data_wait_s=computing - waiting, step_s=time.perf_counter() - computing)
            window.append(values)
            self.step += 1
            if self.step % self.spec.log_every == 0 or self.step == self.spec.steps:
                self._log(window)
            if self.step % self.spec.checkpoint_every == 0 and self.step < self.spec.steps:
                self.checkpoint()
        return self._stop("finished", window)


def run_job(spec: JobSpec, runtime: Runtime, resume_from: Path | None = None,
            progress: ProgressWriter | None = None, cancel: CancelFlag | None = None,
            status: StatusFile | None = None) -> RunResult:
    """Seed, build the spec's method (same init on every rank) and train it."""
    seed_all(spec.seed)
    return Trainer(spec, build_setup(spec, runtime), runtime, progress, cancel, status).run(resume_from)


def resume_point(job_dir: str | Path, resume: bool) -> Path | None:
    """The checkpoint to continue from with --resume; refuses to start over existing checkpoints without it."""
    latest = latest_checkpoint(job_dir)
    if resume and latest is None:
        raise JobError(f"nothing to resume: no checkpoint in {job_dir}")
    if not resume and latest is not None:
        raise JobError(f"{job_dir} already holds checkpoints (newest: {latest.name}); pass --resume to "
                       "continue that run or choose another output_dir")
    return latest if resume else None
