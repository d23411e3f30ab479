"""`python -m vessa.cli train` as the Slicer module runs it: SIGTERM cancel, resume, errors."""

from __future__ import annotations

import signal

from job_process import JobProcess, write_spec

from vessa import cli
from vessa.jobs import EXIT_CANCELLED, parse_progress_line, read_status
from vessa.train.training_checkpoint import load_checkpoint


def test_sigterm_cancels_with_a_checkpoint_and_resume_finishes(make_spec, tmp_path):
    spec_path, job = write_spec(make_spec, tmp_path, steps=30, checkpoint_every=10, log_every=1)
    first = JobProcess("--spec", str(spec_path))
    first.wait_for(lambda e: e["event"] == "progress")
    first.process.send_signal(signal.SIGTERM)
    assert first.finish() == EXIT_CANCELLED
    cancelled = first.events[-1]
    assert cancelled["event"] == "cancelled" and 1 <= cancelled["step"] < 30
    assert load_checkpoint(cancelled["checkpoint"]).step == cancelled["step"]
    assert read_status(job)["state"] == "cancelled"

    second = JobProcess("--spec", str(spec_path), "--resume")
    assert second.finish() == 0, second.stderr
    assert second.of("started")[0]["step"] == cancelled["step"]
    assert second.of("started")[0]["resumed_from"] == cancelled["checkpoint"]
    assert second.events[-1]["event"] == "finished" and second.events[-1]["step"] == 30
    assert read_status(job)["state"] == "finished"


def test_errors_exit_2_with_an_error_event_and_failed_status(make_spec, tmp_path, capsys):
    spec_path, job = write_spec(make_spec, tmp_path, stage="stage1", method="dusss")
    assert cli.main(["train", "--spec", str(spec_path)]) == 2
    out, err = capsys.readouterr()
    events = [parse_progress_line(line) for line in out.splitlines()]
    assert events[-1]["event"] == "error"
    assert "method 'stage1:dusss' is not available yet" in events[-1]["message"]
    assert "vessa train: error: method 'stage1:dusss'" in err
    assert read_status(job)["state"] == "failed"

    assert cli.main(["train", "--spec", str(tmp_path / "nope.json")]) == 2
    out, _ = capsys.readouterr()
    assert [parse_progress_line(line) for line in out.splitlines()] == [
        {"event": "error", "message": f"job spec not found: {tmp_path / 'nope.json'}"}]


def folder_state(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.is_file() and p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def test_a_refused_start_touches_nothing(make_spec, tmp_path, capsys):
    """A cancelled run's folder: starting again without --resume is refused; its status stays 'cancelled'."""
    spec_path, job = write_spec(make_spec, tmp_path)
    job.mkdir()
    (job / "ckpt_step158.pt").write_bytes(b"checkpoint of the cancelled run")
    (job / "status.json").write_text('{"state": "cancelled", "step": 158, "pid": 1}\n')
    before = folder_state(tmp_path)
    assert cli.main(["train", "--spec", str(spec_path)]) == 2
    out, err = capsys.readouterr()
    assert "already holds checkpoints (newest: ckpt_step158.pt)" in err
    assert parse_progress_line(out.splitlines()[-1])["event"] == "error"
    assert folder_state(tmp_path) == before
    assert read_status(job) == {"state": "cancelled", "step": 158, "pid": 1}


def test_recipe_options_with_a_spec_are_refused(make_spec, tmp_path, capsys):
    spec_path, _ = write_spec(make_spec, tmp_path)
    before = folder_state(tmp_path)
    assert cli.main(["train", "--spec", str(spec_path), "--steps", "5", "--device", "cpu"]) == 2
    assert ("--steps, --device only apply to --recipe; with --spec, set them in the spec file"
            in capsys.readouterr().err)
    assert folder_state(tmp_path) == before


def test_a_recipe_needs_an_output_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--recipe", "starter"]) == 2
    assert "--recipe starter needs --output" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no ./runs/starter


def test_a_recipe_over_an_earlier_run_is_refused_before_it_writes(tmp_path, capsys):
    from vessa.train.recipes import recipe_job_dir

    job = recipe_job_dir(tmp_path / "run")
    job.mkdir(parents=True)
    (job / "ckpt_step10.pt").write_bytes(b"earlier run")
    before = folder_state(tmp_path)
    assert cli.main(["train", "--recipe", "starter", "--output", str(tmp_path / "run"), "--steps", "5"]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert folder_state(tmp_path) == before
