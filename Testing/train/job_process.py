"""Run `python -m vessa.cli train` (or torchrun) as a real subprocess and read its progress events."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from vessa.jobs import parse_progress_line

ROOT = Path(__file__).resolve().parents[2]


class JobProcess:
    """A training subprocess; a thread collects stdout lines so the test can wait for events."""

    def __init__(self, *args: str, launcher: tuple[str, ...] = ()):
        command = [sys.executable, *launcher, "-m", "vessa.cli", "train", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.events: list[dict] = []
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = 180.0) -> dict:
        """Collect events until one satisfies `predicate`; AssertionError on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the job ended before the awaited event; events: {self.events}\n"
                                     f"stderr: {self.process.stderr.read()[-3000:]}")
            self.stdout.append(line)
            event = parse_progress_line(line)
            if event is not None:
                self.events.append(event)
                if predicate(event):
                    return event
        raise AssertionError(f"no awaited event within {timeout} s; events: {self.events}")

    def finish(self, timeout: float = 300.0) -> int:
        """Wait for the exit code, collecting the remaining events."""
        returncode = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=30)) is not None:
            self.stdout.append(line)
            event = parse_progress_line(line)
            if event is not None:
                self.events.append(event)
        self.stderr = self.process.stderr.read()
        return returncode

    def of(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]


def write_spec(make_spec, tmp_path: Path, **fields) -> tuple[Path, Path]:
    """Write make_spec(**fields) to tmp_path/job.json; returns (spec file, job folder)."""
    spec = make_spec(**fields)
    return spec.to_json(tmp_path / "job.json"), Path(spec.output_dir)
