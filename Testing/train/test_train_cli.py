"""`python -m vessa.cli train` as the Slicer module runs it: SIGTERM cancel, resume, errors."""

from __future__ import annotations

import signal

from job_process import JobProcess, write_spec

from vessa.jobs import EXIT_CANCELLED, read_status
from vessa.train.checkpoint import load_checkpoint


def test_sigterm_cancels_with_a_checkpoint_and_resume_finishes(make_spec, tmp_path):
    spec_path, job = write_spec(make_spec, tmp_path, steps=60, checkpoint_every=20, log_every=1)
    first = JobProcess("--spec", str(spec_path))
    first.wait_for(lambda e: e["event"] == "progress")
    first.process.send_signal(signal.SIGTERM)
    assert first.finish() == EXIT_CANCELLED
    cancelled = first.events[-1]
    assert cancelled["event"] == "cancelled" and 1 <= cancelled["step"] < 60
    assert load_checkpoint(cancelled["checkpoint"]).step == cancelled["step"]
    assert read_status(job)["state"] == "cancelled"

    second = JobProcess("--spec", str(spec_path), "--resume")
    assert second.finish() == 0, second.stderr
    assert second.of("started")[0]["step"] == cancelled["step"]
    assert second.of("started")[0]["resumed_from"] == cancelled["checkpoint"]
    assert second.events[-1]["event"] == "finished" and second.events[-1]["step"] == 60
    assert read_status(job)["state"] == "finished"


def test_errors_exit_2_with_an_error_event_and_failed_status(make_spec, tmp_path):
    spec_path, job = write_spec(make_spec, tmp_path, stage="stage1", method="dusss")
    failed = JobProcess("--spec", str(spec_path))
    assert failed.finish() == 2
    assert failed.events[-1]["event"] == "error"
    assert "method 'stage1:dusss' is not available yet" in failed.events[-1]["message"]
    assert "vessa train: error: method 'stage1:dusss'" in failed.stderr
    assert read_status(job)["state"] == "failed"

    missing = JobProcess("--spec", str(tmp_path / "nope.json"))
    assert missing.finish() == 2
    assert missing.events == [{"event": "error", "message": f"job spec not found: {tmp_path / 'nope.json'}"}]
