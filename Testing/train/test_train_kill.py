"""`kill -9` of a real `python -m vessa.cli train` process, then `--resume`."""

from __future__ import annotations

import signal

from job_process import JobProcess, write_spec

from vessa.jobs import read_status
from vessa.train.training_checkpoint import latest_checkpoint, load_checkpoint


def test_kill_9_then_resume_loses_at_most_one_checkpoint_interval(make_spec, tmp_path):
    every = 4
    spec_path, job = write_spec(make_spec, tmp_path, steps=20, checkpoint_every=every, log_every=1)
    first = JobProcess("--spec", str(spec_path))
    saved = first.wait_for(lambda e: e["event"] == "checkpoint")["step"]
    seen = first.wait_for(lambda e: e["event"] == "progress" and e["step"] >= saved + 2)["step"]
    first.process.kill()  # SIGKILL: no handler runs, no checkpoint is written
    assert first.finish() == -signal.SIGKILL
    assert read_status(job)["state"] == "running"  # what a UI finds after a crash (pid is gone)
    latest = latest_checkpoint(job)
    assert latest is not None
    latest_step = load_checkpoint(latest).step  # intact despite the kill
    assert latest_step >= saved

    second = JobProcess("--spec", str(spec_path), "--resume")
    assert second.finish() == 0, second.stderr
    resumed = second.of("started")[0]["step"]
    assert resumed % every == 0 and resumed >= seen // every * every  # lost < one interval of what we saw
    assert second.of("started")[0]["resumed_from"] == str(latest) and latest_step == resumed
    assert [e["step"] for e in second.of("progress")] == list(range(resumed + 1, 21))
    assert second.events[-1]["event"] == "finished"
