"""A job folder's `status.json`: the last state of its job, for a UI started later."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from vessa.io.atomic import atomic_path

STATES = ("running", "finished", "cancelled", "failed")
STATUS_FILE = "status.json"


class StatusFile:
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
