"""Stage-1 objective: builds from a manifest, one step moves every trainable part, bad options."""

import json

import numpy as np
import pytest
import torch

from vessa.errors import JobError
from vessa.io import Segmentation, Volume, write_segmentation, write_volume
from vessa.jobs.spec import JobSpec
from vessa.train.distributed import Runtime
from vessa.train.stage1 import build_stage1, stage1_options

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


@pytest.mark.parametrize(("options", "message"), [
    ({"nope": 1}, "unknown option"),
    ({"sam2_config": "huge"}, "sam2_config"),
    ({"rehearsal_probability": 2}, "rehearsal_probability"),
    ({"max_templates": 0}, "max_templates"),
])
def test_ill_options(manifest, tmp_path, options, message):
    with pytest.raises(JobError, match=message):
        stage1_options(spec(manifest, tmp_path, **options))


def test_no_case_with_the_structures(manifest, tmp_path):
    bad = spec(manifest, tmp_path).__class__(**{**spec(manifest, tmp_path).__dict__, "structures": ["liver"]})
    with pytest.raises(JobError, match="no labelled training case holds any of the structures"):
        build_stage1(bad, CPU)
