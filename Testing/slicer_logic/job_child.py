"""A stand-in training process for the job runner tests: `python job_child.py MODE [ARGS]`.

It speaks the real progress protocol (vessa.jobs.ProgressWriter, CancelFlag) but trains nothing,
so the runner is tested independently of the trainer. Modes:
  events N      started, N progress events mixed with non-JSON output, finished; exit 0
  crash         one progress event, a traceback on stderr, exit 1
  loop DIR      progress every 20 ms until SIGTERM, then writes DIR/last.pt, emits cancelled, exit 3
  stubborn      ignores SIGTERM and starts a grandchild that ignores it too; prints its pid
  forking DIR   forks a helper (same command line), then runs `loop DIR`; the helper writes
                DIR/helper-got-sigterm if it receives SIGTERM
  launcher DIR  like Slicer's PythonSlicer: runs these arguments as another program (argv[0]
                "python-real", then `loop DIR`) and forwards SIGTERM to it; writes
                DIR/launcher-got-sigterm if it receives SIGTERM
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vessa.jobs import EXIT_CANCELLED, CancelFlag, ProgressWriter


def events(count: int) -> int:
    writer = ProgressWriter(stage="stage1", total=count)
    writer.started(0)
    for step in range(1, count + 1):
        print(f"plain text from a library, step {step}", flush=True)
        print("{not json", flush=True)
        writer.progress(step, {"loss": 1.0 / step, "dice": step / count})
    print(json.dumps({"event": "no-such-event", "step": 99}), flush=True)
    writer.finished(count, checkpoint="final.pt")
    return 0


def crash() -> int:
    ProgressWriter(stage="stage1", total=10).progress(1, {"loss": 0.5})
    raise RuntimeError("CUDA out of memory in the stand-in trainer")


def loop(folder: Path) -> int:
    writer = ProgressWriter(stage="stage1", total=10**6)
    with CancelFlag() as flag:
        writer.started(0)
        step = 0
        while not flag.requested:
            step += 1
            writer.progress(step, {"loss": 1.0 / step})
            time.sleep(0.02)
        checkpoint = folder / "last.pt"
        checkpoint.write_text(json.dumps({"step": step}))
        writer.cancelled(step, checkpoint)
    return EXIT_CANCELLED


def stubborn() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    )
    ProgressWriter().log(f"grandchild {grandchild.pid}")
    time.sleep(60)
    return 0


def forking(folder: Path) -> int:
    helper = os.fork()
    if helper == 0:
        signal.signal(signal.SIGTERM, lambda *_: (folder / "helper-got-sigterm").touch())
        time.sleep(60)
        os._exit(0)
    try:
        return loop(folder)
    finally:
        os.kill(helper, signal.SIGKILL)
        os.waitpid(helper, 0)


def launcher(folder: Path) -> int:
    # Not started as this venv's Python, the copy finds packages through PYTHONPATH only.
    vessa_root = Path(importlib.util.find_spec("vessa").origin).parents[1]
    paths = [str(vessa_root), *(p for p in sys.path if p)]
    env = {**os.environ, "JOB_CHILD_RELAUNCHED": "1", "PYTHONPATH": os.pathsep.join(paths)}
    child = subprocess.Popen(["python-real", *sys.argv], executable=sys.executable, env=env)

    def forward(signum, frame):
        (folder / "launcher-got-sigterm").touch()
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    return child.wait()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "events":
        sys.exit(events(int(args[0])))
    if mode == "crash":
        sys.exit(crash())
    if mode == "loop":
        sys.exit(loop(Path(args[0])))
    if mode == "forking":
        sys.exit(forking(Path(args[0])))
    if mode == "launcher":
        relaunched = os.environ.get("JOB_CHILD_RELAUNCHED") == "1"
        sys.exit(loop(Path(args[0])) if relaunched else launcher(Path(args[0])))
    sys.exit(stubborn())
