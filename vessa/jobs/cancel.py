"""Cancel a job with SIGTERM/SIGINT, and keep its state in the job folder's `status.json`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from vessa.io.atomic import atomic_path

EXIT_CANCELLED = 3
STATES = ("running", "finished", "cancelled", "failed")
STATUS_FILE = "status.json"


class CancelFlag:
    """A flag set by SIGTERM/SIGINT (or `request()`) that the trainer polls once per step.

    The first signal only sets the flag, so the trainer can finish the step, save a
    checkpoint and exit with EXIT_CANCELLED; a second signal raises KeyboardInterrupt.
    Use as a context manager to install the handlers and restore the previous ones after.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        """True once a cancel was requested."""
        return self._event.is_set()

    def request(self, reason: str = "request") -> None:
        """Ask the job to stop at the next step boundary."""
        self.signal_name = self.signal_name or reason
        self._event.set()

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.request(signal.Signals(signum).name)

    def install(self) -> CancelFlag:
        """Install the signal handlers (main thread only; elsewhere this is a no-op)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> CancelFlag:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


class JobStatus:
    """The job folder's `status.json`: state, step, last checkpoint, pid, update time.

    Written atomically on every change, so a UI started later can show the last job. Only the
    main process writes (`enabled=False` on other ranks).
    """

    def __init__(self, job_dir: str | os.PathLike, enabled: bool = True):
        self.path = Path(job_dir) / STATUS_FILE
        self.enabled = enabled
        self.fields: dict[str, Any] = {}

    def update(self, state: str | None = None, **fields: Any) -> dict[str, Any]:
        """Merge `fields` (and `state`, one of STATES) into the status and write it."""
        if state is not None:
            if state not in STATES:
                raise ValueError(f"job state must be one of {', '.join(STATES)}, got {state!r}")
            self.fields["state"] = state
        self.fields.update(fields)
        self.fields.update(pid=os.getpid(), updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if self.enabled:
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.fields, indent=2) + "\n", encoding="utf-8")
        return dict(self.fields)


def read_status(job_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last status written in `job_dir`, or None if there is none (or it is unreadable)."""
    try:
        status = json.loads((Path(job_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("state") in STATES else None
