"""A stand-in training process for the job runner tests: `python job_child.py MODE [ARGS]`.

It speaks the real progress protocol (vessa.jobs.ProgressWriter, CancelFlag) but trains nothing,
so the runner is tested independently of the trainer. Modes:
  events N      started, N progress events mixed with non-JSON output, finished; exit 0
  crash         one progress event, a traceback on stderr, exit 1
  loop DIR      progress every 20 ms until SIGTERM, then writes DIR/last.pt, emits cancelled, exit 3
  stubborn      ignores SIGTERM and starts a grandchild that ignores it too; prints its pid
"""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "events":
        sys.exit(events(int(args[0])))
    if mode == "crash":
        sys.exit(crash())
    if mode == "loop":
        sys.exit(loop(Path(args[0])))
    sys.exit(stubborn())
