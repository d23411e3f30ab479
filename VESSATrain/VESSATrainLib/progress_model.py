"""Progress events of one or more training stages -> overall fraction, ETA text, metric series, log lines."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

# Fields of a progress event that are not metrics (see vessa.jobs.progress).
PROTOCOL_FIELDS = frozenset({"event", "stage", "step", "total", "eta_s"})
STAGE_TITLES = {"stage1": "stage 1", "stage2": "stage 2"}


def formatDuration(seconds: float) -> str:
    """A short human duration: '45 s', '12 min', '2 h 05 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressModel:
    """What the panel shows about a job that runs `stages` one after the other.

    `update(event)` takes the events of `vessa.jobs` (dicts) and returns a line for the log view.
    `series[stage][metric]` holds (step, value) pairs of every numeric metric (loss, dice, ...).
    `timeBudgets[stage]`: seconds, if that stage ends on a time budget; progress and ETA then
    follow the clock (the step count is only an upper bound).
    """

    def __init__(self, stages: Sequence[str], clock: Callable[[], float] = time.monotonic):
        if not stages:
            raise ValueError("a job has at least one stage")
        self.stages = list(stages)
        self.clock = clock
        self.series: dict[str, dict[str, list[tuple[int, float]]]] = {stage: {} for stage in self.stages}
        self.stage = self.stages[0]
        self.step = 0
        self.total: int | None = None
        self.etaSeconds: float | None = None
        self.doneStages: list[str] = []
        self.checkpoints: dict[str, str] = {}  # stage -> its last checkpoint
        self.error: str | None = None
        self.startedAt: float | None = None
        self.timeBudgets: dict[str, float | None] = {}
        self._stageStarted: dict[str, float] = {}

    @property
    def fraction(self) -> float:
        """Overall progress in 0..1; every stage counts the same."""
        done = len(self.doneStages)
        if self.stage not in self.doneStages:
            steps = self.step / self.total if self.total else 0.0
            budget = self.timeBudgets.get(self.stage)
            clock = self._stageElapsed() / budget if budget else 0.0
            done += min(max(steps, clock), 1.0)
        return min(done / len(self.stages), 1.0)

    def _stageElapsed(self) -> float:
        started = self._stageStarted.get(self.stage)
        return 0.0 if started is None else self.clock() - started

    @property
    def elapsedSeconds(self) -> float:
        """Seconds since the first `started` event (0 before it)."""
        return 0.0 if self.startedAt is None else self.clock() - self.startedAt

    def etaText(self) -> str:
        """'about 12 min left', with a note on the stages that follow; '' when unknown."""
        eta = self.etaSeconds
        budget = self.timeBudgets.get(self.stage)
        if budget and self.stage in self._stageStarted:
            eta = min(eta if eta is not None else budget, max(budget - self._stageElapsed(), 0.0))
        if eta is None or self.stage in self.doneStages:
            return ""
        text = f"about {formatDuration(eta)} left"
        later = self.stages[self.stages.index(self.stage) + 1:]
        if later:
            text += f" in {self._title(self.stage)}, then {', '.join(map(self._title, later))}"
        return text

    def lastMetrics(self, stage: str) -> dict[str, float]:
        """The last value of every metric of `stage`."""
        return {name: points[-1][1] for name, points in self.series.get(stage, {}).items() if points}

    def update(self, event: dict[str, Any]) -> str:
        """Take one progress event; return the line the log view shows for it."""
        kind = event.get("event")
        stage = event.get("stage") or self.stage
        if stage not in self.series:
            self.stages.append(stage)
            self.series[stage] = {}
        title = self._title(stage)
        if kind in ("started", "progress"):
            self._moveTo(stage, event)
        if kind == "started":
            self.startedAt = self.clock() if self.startedAt is None else self.startedAt
            self._stageStarted[stage] = self.clock()
            for name, points in self.series[stage].items():  # a resumed job repeats the steps after its checkpoint
                self.series[stage][name] = [point for point in points if point[0] <= self.step]
            return f"{title}: started at step {self.step}" + (f" of {self.total}" if self.total else "")
        if kind == "progress":
            metrics = self._recordMetrics(stage, event, self.step)
            self.etaSeconds = event.get("eta_s")
            shown = ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())
            return f"{title} step {self.step}/{self.total or '?'}" + (f": {shown}" if shown else "")
        if kind == "checkpoint":
            self.checkpoints[stage] = str(event.get("path"))
            validation = self._recordMetrics(stage, {k: v for k, v in event.items() if k.startswith("val_")},
                                              int(event.get("step", self.step)))
            shown = "".join(f", {name} {value:.4g}" for name, value in validation.items())
            return f"{title}: checkpoint {event.get('path')}{shown}"
        if kind == "log":
            return f"{title}: {event.get('message', '')}"
        if kind == "finished":
            if event.get("checkpoint"):
                self.checkpoints[stage] = str(event["checkpoint"])
            self.step = int(event.get("step", self.step))
            if stage not in self.doneStages:
                self.doneStages.append(stage)
            return f"{title} finished at step {self.step}: {event.get('checkpoint') or 'no checkpoint'}"
        if kind == "cancelled":
            if event.get("checkpoint"):
                self.checkpoints[stage] = str(event["checkpoint"])
            return f"{title} cancelled at step {event.get('step', self.step)}; checkpoint kept: " \
                   f"{event.get('checkpoint') or 'none'}"
        if kind == "error":
            self.error = str(event.get("message", "unknown error"))
            return f"{title} error: {self.error}"
        return f"{title}: {kind}"

    def _moveTo(self, stage: str, event: dict[str, Any]) -> None:
        if stage != self.stage:
            self.etaSeconds = None
        self.stage = stage
        self.step = int(event.get("step", self.step))
        self.total = event.get("total", self.total)

    def _recordMetrics(self, stage: str, event: dict[str, Any], step: int) -> dict[str, float]:
        metrics = {}
        for name, value in event.items():
            if name in PROTOCOL_FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.series[stage].setdefault(name, []).append((step, float(value)))
                metrics[name] = float(value)
        return metrics

    @staticmethod
    def _title(stage: str) -> str:
        return STAGE_TITLES.get(stage, stage)
