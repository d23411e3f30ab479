"""Stage-1 objective: builds from a manifest, one step moves every trainable part, bad options."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from vessa.errors import JobError
from vessa.io import Segmentation, Volume, write_segmentation, write_volume
from vessa.jobs.spec import JobSpec
from vessa.train.distributed import Runtime
from vessa.train.methods.stage1 import build_stage1, stage1_options

CPU = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("stage1")
    cases = []
    for index in range(3):
        rng = np.random.default_rng(index)
        image = rng.normal(100, 10, (5, 40, 40)).astype(np.float32)
        box = np.zeros(image.shape, bool)
        box[1:4, 8 + index:24 + index, 10:26] = True
        image[box] += 80
        volume = Volume(image, (1, 1, 2))
        segmentation = Segmentation.on_grid(volume)
        segmentation.add("box", box)
        write_volume(volume, folder / f"c{index}.nrrd")
        write_segmentation(segmentation, folder / f"c{index}.seg.nrrd")
        cases.append({"id": f"c{index}", "image": f"c{index}.nrrd", "segmentation": f"c{index}.seg.nrrd",
                      "modality": "MR", "split": "val" if index == 2 else "train"})
    path = folder / "manifest.json"
    path.write_text(json.dumps({"version": 1, "structures": ["box"], "cases": cases}))
    return str(path)


def spec(manifest: str, tmp_path, **options) -> JobSpec:
    return JobSpec(stage="stage1", method="vessa", manifest=manifest, output_dir=str(tmp_path / "job"),
                   structures=["*"], image_size=128, batch_size=2,
                   options={"sam2_config": "half_tiny", "val_episodes": 2, **options})


def test_one_step_reaches_every_trainable_part(manifest, tmp_path):
    torch.manual_seed(0)
    setup = build_stage1(spec(manifest, tmp_path, rehearsal_probability=0.0), CPU)
    objective = setup.objective
    batch = next(setup.batches(0))
    assert batch["image"].shape == (2, 1, 128, 128) and batch["text"] == ["box", "box"]
    loss, metrics = objective.training_step(batch, 0, objective.models())
    assert torch.isfinite(loss) and 0 <= metrics["dice"] <= 1 and metrics["rehearsal"] == 0.0
    loss.backward()
    for name, params in objective.assistant.parameter_groups().items():
        assert sum(float(p.grad.abs().sum()) for p in params if p.grad is not None) > 0, name
    groups = objective.parameter_groups()
    assert {g["lr_scale"] for g in groups} == {1.0, 10.0}


def test_rehearsal_step_uses_corrupted_mask_prompt(manifest, tmp_path):
    setup = build_stage1(spec(manifest, tmp_path, rehearsal_probability=1.0), CPU)
    loss, metrics = setup.objective.training_step(next(setup.batches(3)), 3, setup.objective.models())
    assert metrics["rehearsal"] == 1.0 and torch.isfinite(loss)


def test_evaluate_scores_validation_episodes(manifest, tmp_path):
    setup = build_stage1(spec(manifest, tmp_path), CPU)
    metrics = setup.objective.evaluate()
    assert set(metrics) == {"dice"} and 0.0 <= metrics["dice"] <= 1.0


def test_batches_restart_at_any_step(manifest, tmp_path):
    setup = build_stage1(spec(manifest, tmp_path), CPU)
    stream = setup.batches(0)
    next(stream)
    second = next(stream)
    assert torch.equal(next(setup.batches(1))["image"], second["image"])
    # episodes built ahead by worker processes: the same stream
    ahead = next(build_stage1(spec(manifest, tmp_path, workers=2), CPU).batches(1))
    for key in ("image", "mask", "templates", "template_masks", "location_prior"):
        assert torch.equal(ahead[key], second[key])


@pytest.mark.parametrize(("options", "message"), [
    ({"nope": 1}, "unknown option"),
    ({"sam2_config": "huge"}, "sam2_config"),
    ({"rehearsal_probability": 2}, "rehearsal_probability"),
    ({"max_templates": 0}, "max_templates"),
    ({"location_prior": -1}, "location_prior"),
    ({"location_prior": True}, "location_prior"),
    ({"workers": -1}, "workers"),
    ({"fine_levels": ["s3"]}, "fine_levels"),
    ({"fine_levels": "s0"}, "fine_levels"),
    ({"fine_levels": 1}, "fine_levels"),
])
def test_ill_options(manifest, tmp_path, options, message):
    with pytest.raises(JobError, match=message):
        stage1_options(spec(manifest, tmp_path, **options))


def test_no_case_with_the_structures(manifest, tmp_path):
    bad = spec(manifest, tmp_path).__class__(**{**spec(manifest, tmp_path).__dict__, "structures": ["liver"]})
    with pytest.raises(JobError, match="no labelled training case holds any of the structures"):
        build_stage1(bad, CPU)


def run_spec(job_spec: JobSpec, resume_from=None, cancel_at=None):
    """Run a stage-1 job in this process; cancel after step `cancel_at` is reported."""
    import io

    from vessa.jobs import CancelFlag, ProgressWriter, parse_progress_line
    from vessa.train.distributed import init_distributed
    from vessa.train.trainer import run_job

    cancel = CancelFlag()

    class Stream(io.StringIO):
        def write(self, text):
            for line in text.splitlines():
                event = parse_progress_line(line)
                if cancel_at is not None and event and event["event"] == "progress" and event["step"] == cancel_at:
                    cancel.request()
            return len(text)

    progress = ProgressWriter(job_spec.stage, job_spec.steps, stream=Stream())
    return run_job(job_spec, init_distributed("cpu"), resume_from, progress, cancel)


def metrics(job_dir) -> list[dict[str, str]]:
    import csv
    from pathlib import Path

    with (Path(job_dir) / "metrics.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_stage1_resume_reproduces_the_next_steps(manifest, tmp_path):
    from pathlib import Path

    from vessa.model.checkpoint import load_assistant
    from vessa.train.trainer import resume_point

    def job(name):
        return spec(manifest, tmp_path, rehearsal_probability=0.5).__class__(**{
            **spec(manifest, tmp_path, rehearsal_probability=0.5).__dict__, "output_dir": str(tmp_path / name),
            "steps": 4, "log_every": 1, "checkpoint_every": 100, "device": "cpu"})

    run_spec(job("full"))
    half = job("half")
    assert run_spec(half, cancel_at=2).cancelled
    run_spec(half, resume_from=resume_point(half.output_dir, resume=True))
    full_rows, half_rows = metrics(tmp_path / "full"), metrics(tmp_path / "half")
    assert [r["step"] for r in half_rows] == ["1", "2", "3", "4"]
    for mine, theirs in zip(half_rows, full_rows, strict=True):
        assert (mine["loss"], mine["rehearsal"]) == (theirs["loss"], theirs["rehearsal"])
    # the exported inference checkpoint loads into a segmenter-ready assistant
    exported = Path(half.output_dir) / "vessa_stage1.pt"
    assert load_assistant(exported).config.image_size == 128


def test_stage1_trains_under_torchrun_with_two_cpu_processes(manifest, tmp_path):
    from job_process import JobProcess  # Testing/train, on sys.path through its conftest

    job_spec = spec(manifest, tmp_path).__class__(**{**spec(manifest, tmp_path).__dict__, "steps": 2,
                                                     "batch_size": 1, "checkpoint_every": 100, "log_every": 1,
                                                     "device": "cpu"})
    path = tmp_path / "job.json"
    job_spec.to_json(path)
    run = JobProcess("--spec", str(path),
                     launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert run.finish(timeout=600) == 0, run.stderr[-3000:]
    assert run.of("started")[0]["world_size"] == 2
    assert [e["event"] for e in run.events] == ["started", "progress", "progress", "log", "checkpoint", "finished"]


def test_location_prior_option_builds_a_gated_model_that_learns_the_gate(manifest, tmp_path):
    torch.manual_seed(0)
    setup = build_stage1(spec(manifest, tmp_path, location_prior=4.0, rehearsal_probability=0.0), CPU)
    objective = setup.objective
    assert objective.assistant.prior_gate.item() == 4.0
    batch = next(setup.batches(0))
    assert batch["location_prior"].shape == (2, 1, 128, 128)
    loss, _ = objective.training_step(batch, 0, objective.models())
    loss.backward()
    assert objective.assistant.prior_gate.grad.abs() > 0


@pytest.mark.parametrize(("option", "value"), [("location_prior", 4.0), ("fine_levels", ["s0"])])
def test_model_options_must_match_the_init_checkpoint(manifest, tmp_path, option, value):
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.checkpoint import save_checkpoint
    from vessa.model.config import MatchingConfig, ModelConfig

    torch.manual_seed(0)
    plain = ModelConfig(sam2_config="half_tiny", image_size=128, matching=MatchingConfig(fine_levels=[]))
    path = save_checkpoint(TemplateAssistant(plain), tmp_path / "plain.pt")
    job = dataclasses.replace(spec(manifest, tmp_path, **{option: value}), init_checkpoint=str(path))
    with pytest.raises(JobError, match=f"{option}.*init checkpoint"):
        build_stage1(job, CPU)
    kept = build_stage1(dataclasses.replace(job, options={"sam2_config": "half_tiny"}), CPU).objective.assistant
    assert kept.config == plain  # without the options the checkpoint's model is trained as it is


def test_fine_levels_option_sets_the_models_matching(manifest, tmp_path):
    setup = build_stage1(spec(manifest, tmp_path, fine_levels=[]), CPU)
    assert setup.objective.assistant.config.matching.fine_levels == []
