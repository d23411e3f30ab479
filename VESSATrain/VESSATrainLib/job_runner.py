"""Run a job command in a background process: stdout lines become events, cancel ends its process tree.

`SubprocessJobRunner` never blocks the caller: reader threads fill a queue that `poll()` empties
(in Slicer from a QTimer on the GUI thread), and `cancel()` returns at once while a watchdog
thread escalates from SIGTERM to kill. `TrainLogic` takes any `JobRunner`, so its tests can pass a
fake one.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

Event = dict[str, Any]


@dataclass(frozen=True)
class JobExit:
    """How a finished process ended: its exit code, whether a cancel was asked for, its last stderr lines."""

    returncode: int
    cancelRequested: bool
    stderrTail: str


class JobRunner(Protocol):
    """What `TrainLogic` needs from a process launcher."""

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None, stderrLog: str | os.PathLike | None = None) -> None:
        """Launch `argv`; stderr lines are also appended to `stderrLog` if given."""

    def poll(self) -> list[Event]:
        """The events that arrived since the last call, in order; never blocks."""

    def cancel(self) -> None:
        """Ask the job to stop (returns at once); it is killed if it has not ended after the grace time."""

    @property
    def running(self) -> bool:
        """True from `start` until `poll` has returned the last event of the process."""

    @property
    def exit(self) -> JobExit | None:
        """Set by the `poll` call that returned the process's last event; None before."""


_END = object()  # queued by the stdout reader after the process has exited


class SubprocessJobRunner:
    """A `JobRunner` on `subprocess.Popen` with reader threads, a queue and a psutil tree kill.

    parseLine: turns one stdout line into an event, or None for any other output (ignored).
    graceSeconds: how long `cancel` waits after SIGTERM before killing what is left of the tree.
    stderrLines: how many stderr lines `JobExit.stderrTail` keeps.
    """

    def __init__(self, parseLine: Callable[[str], Event | None], graceSeconds: float = 2.0, stderrLines: int = 40):
        self.parseLine = parseLine
        self.graceSeconds = graceSeconds
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderrLines)
        self._queue: queue.Queue = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._cancelRequested = False
        self._exit: JobExit | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._exit is None

    @property
    def exit(self) -> JobExit | None:
        return self._exit

    @property
    def pid(self) -> int | None:
        """The process id of the launched command (None before `start`)."""
        return None if self._process is None else self._process.pid

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None, stderrLog: str | os.PathLike | None = None) -> None:
        if self.running:
            raise RuntimeError("a job is already running in this runner")
        self._stderr.clear()
        self._queue = queue.Queue()
        self._cancelRequested = False
        self._exit = None
        self._process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # No console window per job on Windows.
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        self._threads = [
            threading.Thread(target=self._readStderr, args=(self._process, stderrLog), daemon=True),
            threading.Thread(target=self._readStdout, args=(self._process, self._queue), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _readStdout(self, process: subprocess.Popen, lines: queue.Queue) -> None:
        for line in process.stdout:
            event = self.parseLine(line)
            if event is not None:
                lines.put(event)
        process.wait()
        self._threads[0].join(timeout=5)  # the stderr tail is complete before the end is announced
        lines.put(_END)

    def _readStderr(self, process: subprocess.Popen, logPath: str | os.PathLike | None) -> None:
        log = open(logPath, "a", encoding="utf-8") if logPath else None  # noqa: SIM115 (closed below)
        try:
            for line in process.stderr:
                self._stderr.append(line.rstrip("\n"))
                if log:
                    log.write(line)
                    log.flush()
        finally:
            if log:
                log.close()

    def poll(self) -> list[Event]:
        events = []
        while self._exit is None:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._exit = JobExit(self._process.returncode, self._cancelRequested, "\n".join(self._stderr))
            else:
                events.append(item)
        return events

    def cancel(self) -> None:
        if not self.running or self._cancelRequested:
            return
        self._cancelRequested = True
        try:
            root = psutil.Process(self._process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in terminateTargets(root):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)
        threading.Thread(target=self._killAfterGrace, args=(self._process, tree[1:]), daemon=True).start()

    def _killAfterGrace(self, process: subprocess.Popen, descendants: list[psutil.Process]) -> None:
        # The launched process is waited for through Popen only: a psutil wait would reap it and
        # leave Popen a returncode of 0.
        deadline = time.monotonic() + self.graceSeconds
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.graceSeconds)
        _, alive = psutil.wait_procs(descendants, timeout=max(0.0, deadline - time.monotonic()))
        for survivor in alive:  # children started after the SIGTERM (e.g. data loader workers)
            with contextlib.suppress(psutil.NoSuchProcess):
                alive += [child for child in survivor.children(recursive=True) if child not in alive]
        if process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                alive += [c for c in psutil.Process(process.pid).children(recursive=True) if c not in alive]
            process.kill()
        for survivor in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                survivor.kill()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the process has ended and all its output is queued (for scripts and tests)."""
        if self._process is None:
            return True
        self._threads[1].join(timeout)
        return not self._threads[1].is_alive()


def terminateTargets(root: psutil.Process) -> list[psutil.Process]:
    """The processes of a job tree that get SIGTERM on cancel (after the grace, all of it is killed).

    Each job process gets exactly one SIGTERM, because a second one stops a trainer at once,
    without its checkpoint (vessa.jobs.CancelFlag). So these are left out:
    - launchers, which run the same arguments under another executable (Slicer's PythonSlicer
      runs python-real): their child gets the signal, whether or not they forward it;
    - the workers of `torch.distributed.run`, which forwards SIGTERM to them;
    - forked helpers, which have their parent's command line (e.g. DataLoader workers): their
      parent stops them, and one that dies first makes the parent fail instead of cancel.
    """
    targets: list[psutil.Process] = []

    def visit(process: psutil.Process, parentCmdline: list[str] | None) -> None:
        try:
            cmdline = process.cmdline()
            if cmdline == parentCmdline:
                return
            children = process.children()
            if not any(_relaunches(cmdline, child) for child in children):
                targets.append(process)
            if "torch.distributed.run" not in cmdline:
                for child in children:
                    visit(child, cmdline)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return

    visit(root, None)
    return targets


def _relaunches(cmdline: list[str], child: psutil.Process) -> bool:
    childCmdline = child.cmdline()
    return len(cmdline) > 1 and childCmdline[1:] == cmdline[1:] and childCmdline[:1] != cmdline[:1]


def readTail(path: str | os.PathLike, lines: int = 40) -> str:
    """The last `lines` lines of a text file such as a runner's stderr log ("" if it cannot be read)."""
    try:
        with open(Path(path), encoding="utf-8", errors="replace") as log:
            return "".join(collections.deque(log, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""
