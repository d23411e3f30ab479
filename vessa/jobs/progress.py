"""The JSON-lines progress protocol: one JSON object per stdout line, written by rank 0 only.

Events (field ``"event"``): ``started``, ``progress``, ``checkpoint`` (``path``), ``log``
(``message``), ``finished`` (``checkpoint``), ``cancelled`` (``checkpoint``), ``error``
(``message``). See docs/training.md for every field.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, TextIO

EVENTS = ("started", "progress", "checkpoint", "log", "finished", "cancelled", "error")


def _json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, inf) become null; numpy/torch scalars become numbers."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_progress_line(line: str | bytes) -> dict[str, Any] | None:
    """The event of one stdout line, or None if the line is not a progress event (any other text)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    return event


class ProgressWriter:
    """Writes progress events as JSON lines to `stream` (stdout), flushed after each line.

    Only the main process writes: pass `enabled=False` on the other ranks. The ETA comes from an
    exponential moving average of the seconds per step between `progress` calls.
    """

    def __init__(self, stage: str | None = None, total: int | None = None, stream: TextIO | None = None,
                 enabled: bool = True, smoothing: float = 0.1, clock=time.monotonic):
        self.stage = stage
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.smoothing = smoothing
        self.clock = clock
        self.seconds_per_step: float | None = None
        self._last: tuple[int, float] | None = None

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event (if enabled) and return it."""
        if event not in EVENTS:
            raise ValueError(f"unknown progress event {event!r}; events: {', '.join(EVENTS)}")
        record: dict[str, Any] = {"event": event}
        if self.stage is not None:
            record["stage"] = self.stage
        record.update({key: _json_safe(value) for key, value in fields.items()})
        if self.enabled:
            stream = self.stream or sys.stdout
            stream.write(json.dumps(record, allow_nan=False) + "\n")
            stream.flush()
        return record

    def mark(self, step: int) -> None:
        """Start timing from `step` (call when training starts or resumes)."""
        self._last = (step, self.clock())

    def eta_s(self, step: int) -> float | None:
        """Update the seconds-per-step average with the steps since the last call; the ETA in seconds."""
        now = self.clock()
        if self._last is not None and step > self._last[0]:
            rate = (now - self._last[1]) / (step - self._last[0])
            if self.seconds_per_step is None:
                self.seconds_per_step = rate
            else:
                self.seconds_per_step += self.smoothing * (rate - self.seconds_per_step)
        self._last = (step, now)
        if self.seconds_per_step is None or self.total is None:
            return None
        return round(self.seconds_per_step * max(self.total - step, 0), 1)

    def started(self, step: int, **fields: Any) -> dict[str, Any]:
        """Training starts (or resumes) at `step`; also starts the ETA clock."""
        self.mark(step)
        return self.emit("started", step=step, total=self.total, **fields)

    def progress(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """`step` steps are done; `metrics` (loss, dice, ...) go into the event with the ETA."""
        clash = {"event", "stage", "step", "total", "eta_s"} & set(metrics)
        if clash:
            raise ValueError(f"metric names {sorted(clash)} are reserved by the progress protocol")
        return self.emit("progress", step=step, total=self.total, **metrics, eta_s=self.eta_s(step))

    def checkpoint(self, step: int, path: str, **fields: Any) -> dict[str, Any]:
        """A checkpoint of `step` was written to `path`."""
        return self.emit("checkpoint", step=step, path=str(path), **fields)

    def log(self, message: str) -> dict[str, Any]:
        """A one-line message for the user."""
        return self.emit("log", message=message)

    def finished(self, step: int, checkpoint: str | None, **fields: Any) -> dict[str, Any]:
        """The job ended normally at `step`; `checkpoint` is its final checkpoint."""
        return self.emit("finished", step=step, total=self.total,
                         checkpoint=None if checkpoint is None else str(checkpoint), **fields)

    def cancelled(self, step: int, checkpoint: str | None) -> dict[str, Any]:
        """The job was cancelled at `step`; `checkpoint` is where to resume from."""
        return self.emit("cancelled", step=step, checkpoint=None if checkpoint is None else str(checkpoint))

    def error(self, message: str) -> dict[str, Any]:
        """The job failed; `message` is the one-line reason."""
        return self.emit("error", message=message)
