"""Fixtures for the training tests: a tiny on-disk cohort (vessa.io files + manifest.json) and job specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cohort_files import SIZE, blob_case, write_manifest

from vessa.jobs import JobSpec


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.json of 4 cases of 4 slices 32x32: 2 train, 1 val, 1 unlabelled (do not modify)."""
    root = tmp_path_factory.mktemp("cohort")
    cases = []
    for index, split in enumerate(("train", "train", "val", "unlabelled")):
        image, segmentation = blob_case(root, f"case{index}", seed=index)
        cases.append({"id": f"case{index}", "image": image, "modality": "MR", "split": split,
                      "segmentation": None if split == "unlabelled" else segmentation})
    return write_manifest(root, cases)


@pytest.fixture
def make_spec(tiny_cohort: Path, tmp_path: Path):
    """make_spec(**fields) -> a small supervised JobSpec on the tiny cohort, output in tmp_path/job."""
    def make(**fields) -> JobSpec:
        values = {"stage": "stage2", "method": "supervised", "manifest": str(tiny_cohort),
                  "output_dir": str(tmp_path / "job"), "structures": ["blob"], "steps": 8, "batch_size": 2,
                  "lr": 1e-3, "checkpoint_every": 4, "log_every": 1, "image_size": SIZE, "device": "cpu",
                  "options": {"channels": [4, 8, 16], "res_units": 1}, **fields}
        return JobSpec(**values)
    return make


@pytest.fixture(scope="module")
def assistant():
    """An untrained 128-px assistant, one per test module."""
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.config import ModelConfig

    torch.manual_seed(0)
    return TemplateAssistant(ModelConfig(image_size=128))
