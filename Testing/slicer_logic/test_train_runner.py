"""SubprocessJobRunner with real child processes: event order, garbage, crashes, cancel of the whole tree."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from VESSATrainLib.job_runner import SubprocessJobRunner, readTail, terminateTargets

from vessa.jobs import EXIT_CANCELLED, parse_progress_line

CHILD = Path(__file__).with_name("job_child.py")


def child(*args: str) -> list[str]:
    return [sys.executable, str(CHILD), *args]


def poll_until(runner: SubprocessJobRunner, done, timeout: float = 30.0) -> list[dict]:
    """Poll like the widget's QTimer does until `done(events)` or the process has ended."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += runner.poll()
        if runner.exit is not None or done(events):
            return events
        time.sleep(0.01)
    raise AssertionError(f"no result after {timeout} s; events so far: {events[-3:]}")


def test_events_arrive_in_order_and_garbage_is_ignored():
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("events", "5"))
    assert runner.running
    events = poll_until(runner, lambda events: False)
    assert [event["event"] for event in events] == ["started"] + ["progress"] * 5 + ["finished"]
    assert [event["step"] for event in events if event["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert events[3]["loss"] == pytest.approx(1 / 3)
    assert events[-1]["checkpoint"] == "final.pt"
    assert runner.exit.returncode == 0 and not runner.exit.cancelRequested
    assert not runner.running
    assert runner.poll() == []


def test_crash_is_reported_with_its_error(tmp_path):
    log = tmp_path / "stderr.log"
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("crash"), stderrLog=log)
    events = poll_until(runner, lambda events: False)
    assert [event["event"] for event in events] == ["progress"]
    assert runner.exit.returncode == 1
    assert "RuntimeError: CUDA out of memory in the stand-in trainer" in runner.exit.stderrTail
    assert "Traceback" in runner.exit.stderrTail
    assert readTail(log, lines=1) == "RuntimeError: CUDA out of memory in the stand-in trainer"


def test_cancel_lets_the_job_save_and_exit_with_the_cancel_code(tmp_path):
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("loop", str(tmp_path)))
    poll_until(runner, lambda events: any(event["event"] == "progress" for event in events))
    asked = time.monotonic()
    runner.cancel()
    assert time.monotonic() - asked < 0.1  # cancel never blocks the GUI thread
    events = poll_until(runner, lambda events: False, timeout=5)
    assert time.monotonic() - asked < 2.0
    assert runner.exit.returncode == EXIT_CANCELLED and runner.exit.cancelRequested
    assert events[-1]["event"] == "cancelled"
    saved = json.loads((tmp_path / "last.pt").read_text())
    assert saved["step"] == events[-1]["step"] >= 1


def test_cancel_kills_a_tree_that_ignores_sigterm_within_the_grace_time():
    runner = SubprocessJobRunner(parse_progress_line, graceSeconds=0.5)
    runner.start(child("stubborn"))
    events = poll_until(runner, lambda events: bool(events))
    grandchild = psutil.Process(int(events[0]["message"].split()[-1]))
    asked = time.monotonic()
    runner.cancel()
    poll_until(runner, lambda events: False, timeout=5)
    assert time.monotonic() - asked < 2.0
    assert runner.exit.cancelRequested and runner.exit.returncode != 0
    assert ended(grandchild)


def test_cancel_spares_forked_helpers(tmp_path):
    """A DataLoader-like helper (forked, same command line) is left to its parent, not signalled."""
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("forking", str(tmp_path)))
    poll_until(runner, lambda events: any(event["event"] == "progress" for event in events))
    assert terminateTargets(psutil.Process(runner.pid)) == [psutil.Process(runner.pid)]
    runner.cancel()
    events = poll_until(runner, lambda events: False, timeout=5)
    assert runner.exit.returncode == EXIT_CANCELLED and events[-1]["event"] == "cancelled"
    assert not (tmp_path / "helper-got-sigterm").exists()


def test_cancel_through_a_launcher_signals_the_trainer_once(tmp_path):
    """Behind a PythonSlicer-like launcher that forwards SIGTERM, the trainer still gets only one."""
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("launcher", str(tmp_path)))
    poll_until(runner, lambda events: any(event["event"] == "progress" for event in events))
    (trainer,) = psutil.Process(runner.pid).children()
    assert trainer.cmdline()[0] == "python-real"
    assert terminateTargets(psutil.Process(runner.pid)) == [trainer]
    runner.cancel()
    events = poll_until(runner, lambda events: False, timeout=5)
    assert runner.exit.returncode == EXIT_CANCELLED, runner.exit.stderrTail
    assert events[-1]["event"] == "cancelled" and (tmp_path / "last.pt").is_file()
    assert not (tmp_path / "launcher-got-sigterm").exists()


def test_a_second_start_while_running_is_refused(tmp_path):
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(child("loop", str(tmp_path)))
    try:
        with pytest.raises(RuntimeError, match="already running"):
            runner.start(child("events", "1"))
    finally:
        runner.cancel()
        assert runner.wait(timeout=5)


def ended(process: psutil.Process) -> bool:
    """Exited (a zombie waiting for its parent to reap it has ended too)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tiny_cohort(folder: Path) -> Path:
    """Two labelled 4x32x32 cases (a bright box segmented as "blob"), as VESSATrain exports them."""
    import numpy as np

    from vessa.io import Segment, Segmentation, Volume, write_segmentation, write_volume

    rng = np.random.default_rng(0)
    cases = []
    for index in range(2):
        mask = np.zeros((4, 32, 32), bool)
        mask[:, 8 + index:20, 10:24] = True
        image = Volume(rng.normal(size=mask.shape).astype(np.float32) + 3 * mask, spacing=(0.8, 0.8, 2.5))
        write_volume(image, folder / f"images/case{index}.nrrd")
        labels = Segmentation.on_grid(image, [Segment("blob", mask)])
        write_segmentation(labels, folder / f"labels/case{index}.seg.nrrd")
        cases.append({"id": f"case{index}", "image": f"images/case{index}.nrrd",
                      "segmentation": f"labels/case{index}.seg.nrrd", "split": "train"})
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "structures": ["blob"], "cases": cases}))
    return manifest


def endless_supervised_spec(tmp_path, batch_size: int):
    """A tiny CPU supervised job on `tiny_cohort` that runs until cancelled; its job.json path."""
    from vessa.jobs import JobSpec

    spec = JobSpec(stage="stage2", method="supervised", manifest=str(tiny_cohort(tmp_path)),
                   output_dir=str(tmp_path / "job"), structures=["blob"], steps=100_000, batch_size=batch_size,
                   image_size=32, log_every=1, checkpoint_every=100_000, device="cpu", amp=False,
                   options={"channels": [4, 8], "res_units": 0})
    return spec.to_json(tmp_path / "job.json")


@pytest.mark.slow
def test_real_training_progress_cancel_within_2s_and_resume(tmp_path):
    """`vessa train` (supervised, CPU) launched as TrainLogic launches it, through the runner."""
    from VESSATrainLib.train_logic import TrainLogic

    from vessa.train.training_checkpoint import load_checkpoint

    specPath = endless_supervised_spec(tmp_path, batch_size=2)
    logic = TrainLogic(python=sys.executable)
    runner = SubprocessJobRunner(parse_progress_line)

    runner.start(logic.argv(specPath, resume=False, gpus=1), env=logic.environment(), cwd=tmp_path)
    events = poll_until(runner, lambda events: sum(e["event"] == "progress" for e in events) >= 3, timeout=120)
    assert runner.exit is None, runner.exit
    assert events[0]["event"] == "started" and events[0]["step"] == 0
    steps = [event["step"] for event in events if event["event"] == "progress"]
    assert steps == list(range(1, len(steps) + 1))
    assert all(event["loss"] > 0 for event in events if event["event"] == "progress")
    asked = time.monotonic()
    runner.cancel()
    events += poll_until(runner, lambda events: False, timeout=10)
    assert time.monotonic() - asked < 2.0 + 0.5  # the grace, then the kill and the pipes closing
    # The job saves and reports within the grace; exiting can take longer (the interpreter's final
    # garbage collection over torch/monai objects takes seconds), and then it is killed.
    assert runner.exit.cancelRequested and runner.exit.returncode in (EXIT_CANCELLED, -signal.SIGKILL)
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled" and cancelled["step"] >= 3
    assert load_checkpoint(cancelled["checkpoint"]).step == cancelled["step"]

    runner.start(logic.argv(specPath, resume=True, gpus=1), env=logic.environment(), cwd=tmp_path)
    resumed = poll_until(runner, lambda events: any(e["event"] == "progress" for e in events), timeout=120)
    assert resumed[0]["event"] == "started" and resumed[0]["step"] == cancelled["step"]
    assert resumed[0]["resumed_from"] == cancelled["checkpoint"]
    assert resumed[1]["event"] == "progress" and resumed[1]["step"] == cancelled["step"] + 1
    runner.cancel()
    assert poll_until(runner, lambda events: False, timeout=10)[-1]["event"] == "cancelled"


@pytest.mark.slow
def test_torchrun_job_tree_is_cancelled_whole(tmp_path):
    """The >1-GPU command (torch.distributed.run), here with 2 CPU processes on gloo: cancel ends the tree."""
    from VESSATrainLib.train_logic import TrainLogic

    from vessa.train.training_checkpoint import load_checkpoint

    logic = TrainLogic(python=sys.executable)
    argv = logic.argv(endless_supervised_spec(tmp_path, batch_size=1), resume=False, gpus=2)
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    runner = SubprocessJobRunner(parse_progress_line)
    runner.start(argv, env=logic.environment(), cwd=tmp_path)
    events = poll_until(runner, lambda events: sum(e["event"] == "progress" for e in events) >= 2, timeout=180)
    assert runner.exit is None, runner.exit
    assert events[0]["event"] == "started" and events[0]["world_size"] == 2
    tree = psutil.Process(runner.pid).children(recursive=True)
    assert len([p for p in tree if "vessa.cli" in " ".join(p.cmdline())]) == 2  # the two workers
    assert terminateTargets(psutil.Process(runner.pid)) == [psutil.Process(runner.pid)]  # torchrun forwards
    asked = time.monotonic()
    runner.cancel()
    events += poll_until(runner, lambda events: False, timeout=10)
    assert time.monotonic() - asked < 2.0 + 0.5
    assert runner.exit.cancelRequested
    assert [p.pid for p in tree if not ended(p)] == []
    assert events[-1]["event"] == "cancelled"
    assert load_checkpoint(events[-1]["checkpoint"]).step == events[-1]["step"]
