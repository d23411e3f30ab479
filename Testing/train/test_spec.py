"""JobSpec: JSON round trip, relative paths, and a JobError naming the field for each bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vessa.errors import JobError
from vessa.jobs import JobSpec

MINIMAL = {"stage": "stage2", "method": "supervised", "manifest": "cohort/manifest.json", "output_dir": "job",
           "structures": ["liver"]}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_round_trip_through_json(tmp_path):
    spec = JobSpec.from_json(write(tmp_path, {**MINIMAL, "steps": 50, "options": {"channels": [8, 16]},
                                               "time_budget_s": 60, "init_checkpoint": "init.pt"}))
    again = JobSpec.from_json(spec.to_json(tmp_path / "copy" / "job.json"))
    assert again == spec
    assert spec.steps == 50 and spec.options == {"channels": [8, 16]} and spec.batch_size == 8


def test_relative_paths_are_resolved_against_the_spec_folder(tmp_path):
    spec = JobSpec.from_json(write(tmp_path, {**MINIMAL, "init_checkpoint": "../weights/init.pt"}))
    assert spec.manifest == str((tmp_path / "cohort" / "manifest.json").resolve())
    assert spec.output_dir == str((tmp_path / "job").resolve())
    assert spec.init_checkpoint == str((tmp_path.parent / "weights" / "init.pt").resolve())


def test_to_json_is_atomic_and_leaves_no_temporary_files(tmp_path):
    spec = JobSpec(**MINIMAL)
    spec.to_json(tmp_path / "job.json")
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("stage", "stage3", "stage1, stage2"),
    ("method", "fixmatch", "vessa, unimatch, dusss, supervised"),
    ("device", "tpu", "auto, cpu, cuda"),
    ("schedule", "step", "poly, cosine, constant"),
    ("steps", 0, ">= 1"),
    ("steps", 2.5, "integer"),
    ("steps", True, "integer"),
    ("batch_size", "8", "integer"),
    ("lr", 0, "positive"),
    ("lr", float("nan"), "positive"),
    ("grad_clip", -1, ">= 0"),
    ("checkpoint_every", 0, ">= 1"),
    ("image_size", 4, ">= 8"),
    ("amp", "yes", "true or false"),
    ("structures", [], "non-empty list"),
    ("structures", ["liver", "liver"], "distinct"),
    ("structures", "liver", "list"),
    ("manifest", "", "non-empty"),
    ("time_budget_s", -5, "positive"),
    ("options", [1], "object"),
    ("warmup_steps", 1000, "smaller than steps"),
    ("version", 2, "1"),
])
def test_bad_field_values_name_the_field_and_allowed_values(tmp_path, field, value, allowed):
    path = write(tmp_path, {**MINIMAL, field: value})
    with pytest.raises(JobError, match=rf"'{field}' must be .*{allowed}") as error:
        JobSpec.from_json(path)
    assert str(path) in str(error.value)


def test_unknown_and_missing_fields(tmp_path):
    with pytest.raises(JobError, match="unknown job spec field.*learning_rate.*known fields: stage"):
        JobSpec.from_json(write(tmp_path, {**MINIMAL, "learning_rate": 0.1}))
    incomplete = {k: v for k, v in MINIMAL.items() if k != "structures"}
    with pytest.raises(JobError, match="missing required field.*structures"):
        JobSpec.from_json(write(tmp_path, incomplete))


@pytest.mark.parametrize(("content", "message"), [
    (None, "job spec not found"),
    ("{not json", "not a readable JSON"),
    ("[1, 2]", "must be a JSON object"),
])
def test_unreadable_spec_files(tmp_path, content, message):
    path = tmp_path / "job.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(JobError, match=message):
        JobSpec.from_json(path)


def test_constructor_and_replace_validate_too():
    with pytest.raises(JobError, match="'batch_size'"):
        JobSpec(**MINIMAL, batch_size=0)
    with pytest.raises(JobError, match="'stage'"):
        JobSpec(**MINIMAL).replace(stage="1")
