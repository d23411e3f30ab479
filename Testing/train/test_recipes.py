"""`vessa train --recipe starter`: the job it writes trains the shipped starter's model."""

from __future__ import annotations

import json
from types import SimpleNamespace

from vessa.jobs.spec import JobSpec
from vessa.model.checkpoint import read_checkpoint
from vessa.model.config import ModelConfig
from vessa.train import recipes
from vessa.train.methods.stage1 import model_config, stage1_options
from vessa.weights import WeightsRegistry


def test_starter_recipe_builds_the_shipped_starters_model(tmp_path, monkeypatch):
    names = recipes.STARTER_TRAIN + recipes.STARTER_VAL
    cases = {name: SimpleNamespace(image=tmp_path / f"{name}.nrrd", segmentation=tmp_path / f"{name}.seg.nrrd",
                                   modality="MR", segment_names=[f"{name} structure"]) for name in names}
    monkeypatch.setattr(recipes, "_sample_cases", lambda wanted: cases)
    path = recipes.starter_spec(tmp_path / "run", steps=200, workers=2)
    spec = JobSpec.from_json(path)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {c["id"]: c["split"] for c in manifest["cases"]} == {
        **{name: "train" for name in recipes.STARTER_TRAIN}, **{name: "val" for name in recipes.STARTER_VAL}}
    assert manifest["structures"] == sorted(f"{name} structure" for name in recipes.STARTER_TRAIN)
    assert (spec.steps, spec.options["workers"]) == (200, 2)
    registry = WeightsRegistry()
    shipped = read_checkpoint(registry.require_available(registry.get("vessa-starter")))
    assert model_config(spec, stage1_options(spec)) == ModelConfig.from_dict(shipped["config"])
