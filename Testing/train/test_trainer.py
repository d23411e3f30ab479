"""The Trainer on the real supervised objective: exact resume, NaN stop, time budget, outputs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from vessa.errors import JobError
from vessa.jobs import CancelFlag, ProgressWriter, parse_progress_line, read_status
from vessa.train.distributed import init_distributed
from vessa.train.methods import build_setup
from vessa.train.objective import TrainingSetup
from vessa.train.trainer import Trainer, resume_point, run_job
from vessa.train.training_checkpoint import find_checkpoints, load_checkpoint


class Events(io.StringIO):
    """A progress stream that keeps the parsed events and can call `hook(event)` on each."""

    def __init__(self, hook=None):
        super().__init__()
        self.events: list[dict] = []
        self.hook = hook

    def write(self, text: str) -> int:
        for line in text.splitlines():
            event = parse_progress_line(line)
            if event is not None:
                self.events.append(event)
                if self.hook:
                    self.hook(event)
        return len(text)

    def of(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]


def run(spec, resume_from=None, hook=None, cancel=None):
    events = Events(hook)
    progress = ProgressWriter(spec.stage, spec.steps, stream=events)
    result = run_job(spec, init_distributed(spec.device), resume_from, progress, cancel or CancelFlag())
    return result, events


def metrics_rows(job_dir: Path) -> list[dict[str, str]]:
    with (Path(job_dir) / "metrics.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_a_full_run_writes_checkpoints_curves_status_and_events(make_spec):
    spec = make_spec(steps=8, checkpoint_every=4, log_every=2, keep_checkpoints=1)
    result, events = run(spec)
    job = Path(spec.output_dir)
    assert result.reason == "finished" and result.step == 8 and result.checkpoint == job / "ckpt_step8.pt"
    assert [s for s, _ in find_checkpoints(job)] == [8]  # keep_checkpoints=1
    assert load_checkpoint(job / "last.pt").step == 8 and (job / "best.pt").is_file()
    assert (job / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = metrics_rows(job)
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(float(r["loss"]) > 0 and float(r["lr"]) > 0 for r in rows)
    assert all(float(r["data_wait_s"]) >= 0 and float(r["step_s"]) > 0 for r in rows)  # loader wait, step time
    assert rows[1]["val_dice"] != "" and rows[0]["val_dice"] == ""  # validation at checkpoints only
    assert [e["event"] for e in events.events] == ["started", "progress", "progress", "checkpoint", "progress",
                                                   "progress", "checkpoint", "finished"]
    assert [e["step"] for e in events.of("progress")] == [2, 4, 6, 8]
    assert events.of("finished")[0]["checkpoint"] == str(job / "ckpt_step8.pt")
    assert 0.0 <= events.of("finished")[0]["val_dice"] <= 1.0
    status = read_status(job)
    assert status["state"] == "finished" and status["step"] == 8 and status["last_checkpoint"].endswith("step8.pt")


def test_resume_reproduces_every_later_step_bitwise(make_spec, tmp_path):
    full = make_spec(steps=8, output_dir=str(tmp_path / "full"), checkpoint_every=100)
    run(full)
    half = make_spec(steps=8, output_dir=str(tmp_path / "half"), checkpoint_every=100)
    cancel = CancelFlag()
    # Cancel when step 4 is reported, as the Slicer module would: the run stops at the next step boundary.
    result, _ = run(half, hook=lambda e: e["event"] == "progress" and e["step"] == 4 and cancel.request(),
                    cancel=cancel)
    assert result.cancelled and result.step == 4
    # A new process would build everything anew: new objective, optimiser, data stream.
    resumed, events = run(half, resume_from=resume_point(half.output_dir, resume=True))
    assert resumed.reason == "finished" and events.of("started")[0]["step"] == 4
    expected, got = metrics_rows(full.output_dir), metrics_rows(half.output_dir)
    assert [r["step"] for r in got] == [str(s) for s in range(1, 9)]
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine["loss"], mine["dice"], mine["lr"]) == (theirs["loss"], theirs["dice"], theirs["lr"])
    final_full = load_checkpoint(Path(full.output_dir) / "last.pt").models["student"]
    final_half = load_checkpoint(Path(half.output_dir) / "last.pt").models["student"]
    assert all(torch.equal(final_full[k], final_half[k]) for k in final_full)


class NaNAt:
    """Wraps an objective so that the loss of 0-based step `bad_step` is NaN."""

    def __init__(self, objective, bad_step: int):
        self.objective, self.bad_step = objective, bad_step

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def training_step(self, batch, step, nets):
        loss, metrics = self.objective.training_step(batch, step, nets)
        return (loss * float("nan") if step == self.bad_step else loss), metrics


def test_nan_loss_stops_with_the_last_good_checkpoint_untouched(make_spec):
    spec = make_spec(steps=8, checkpoint_every=2)
    runtime = init_distributed("cpu")
    setup = build_setup(spec, runtime)
    hashes = {}
    events = Events(lambda e: e["event"] == "checkpoint" and hashes.update(
        {e["path"]: hashlib.sha256(Path(e["path"]).read_bytes()).hexdigest()}))
    trainer = Trainer(spec, TrainingSetup(NaNAt(setup.objective, bad_step=4), setup.batches), runtime,
                      ProgressWriter(spec.stage, spec.steps, stream=events))
    good = Path(spec.output_dir) / "ckpt_step4.pt"
    with pytest.raises(JobError, match=f"loss became NaN at step 5; last good checkpoint: {good}$"):
        trainer.run()
    assert [s for s, _ in find_checkpoints(spec.output_dir)] == [2, 4]
    assert hashlib.sha256(good.read_bytes()).hexdigest() == hashes[str(good)]
    assert load_checkpoint(Path(spec.output_dir) / "last.pt").step == 4
    assert all(torch.isfinite(v).all() for v in load_checkpoint(good).models["student"].values())


def test_nan_before_any_checkpoint_says_so(make_spec):
    spec = make_spec(steps=4)
    runtime = init_distributed("cpu")
    setup = build_setup(spec, runtime)
    trainer = Trainer(spec, TrainingSetup(NaNAt(setup.objective, bad_step=0), setup.batches), runtime,
                      ProgressWriter(spec.stage, spec.steps, stream=Events()))
    with pytest.raises(JobError, match="at step 1; last good checkpoint: none"):
        trainer.run()


def test_time_budget_stops_with_a_checkpoint_and_resume_continues(make_spec):
    spec = make_spec(steps=8, time_budget_s=1e-9)  # spent before the first step
    result, events = run(spec)
    assert result.reason == "time_budget" and result.step == 0
    assert events.of("finished")[0]["reason"] == "time_budget"
    assert "time budget" in events.of("log")[0]["message"]
    resumed, _ = run(spec.replace(time_budget_s=None), resume_from=resume_point(spec.output_dir, True))
    assert resumed.reason == "finished" and resumed.step == 8


def test_resume_rules(make_spec):
    spec = make_spec(steps=4)
    with pytest.raises(JobError, match="nothing to resume: no checkpoint in"):
        resume_point(spec.output_dir, resume=True)
    run(spec)
    with pytest.raises(JobError, match="already holds checkpoints \\(newest: ckpt_step4.pt\\); pass --resume"):
        resume_point(spec.output_dir, resume=False)
    with pytest.raises(JobError, match="was trained with lr=0.001 but the spec says 0.01"):
        run(spec.replace(lr=0.01), resume_from=resume_point(spec.output_dir, True))
    longer, events = run(spec.replace(steps=6), resume_from=resume_point(spec.output_dir, True))
    assert longer.step == 6 and events.of("started")[0]["resumed_from"].endswith("ckpt_step4.pt")


def test_methods_not_registered_yet_and_bad_options(make_spec, monkeypatch):
    from vessa.train import methods

    monkeypatch.delitem(methods.METHODS, "stage2:unimatch")
    with pytest.raises(JobError, match="method 'stage2:unimatch' is not available yet \\(available: .*"
                                       "stage2:supervised"):
        build_setup(make_spec(method="unimatch"), init_distributed("cpu"))
    with pytest.raises(JobError, match="unknown option\\(s\\) depth for method 'supervised'"):
        build_setup(make_spec(options={"depth": 3}), init_distributed("cpu"))
    with pytest.raises(JobError, match="image_size 34 must be divisible by 4"):
        build_setup(make_spec(image_size=34), init_distributed("cpu"))


def test_status_file_is_json_for_the_ui(make_spec):
    spec = make_spec(steps=2)
    run(spec)
    assert json.loads((Path(spec.output_dir) / "status.json").read_text())["state"] == "finished"
