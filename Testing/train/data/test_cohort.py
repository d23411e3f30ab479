"""Cohort manifests: every problem is a JobError naming the file/structure; the slice dataset streams slices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_files import SIZE, blob_case, write_manifest

from vessa.errors import JobError
from vessa.io import Segmentation, Volume, write_segmentation, write_volume
from vessa.train.data.cohort import load_cohort, read_label_map, read_manifest
from vessa.train.data.slices import SliceDataset


@pytest.fixture
def cohort_dir(tiny_cohort: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the tiny cohort."""
    return Path(shutil.copytree(tiny_cohort.parent, tmp_path / "cohort"))


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def rewrite(root: Path, data: dict) -> Path:
    (root / "manifest.json").write_text(json.dumps(data))
    return root / "manifest.json"


def test_valid_cohort_loads(tiny_cohort):
    cohort = load_cohort(tiny_cohort, ["blob", "ring"])
    assert cohort.structures == ["blob", "ring"]
    assert [c.id for c in cohort.select("train", labelled=True)] == ["case0", "case1"]
    assert [c.id for c in cohort.select("unlabelled")] == ["case3"]
    assert all(c.image.is_absolute() and c.image.is_file() for c in cohort.cases)


def test_missing_image_names_the_file(cohort_dir):
    (cohort_dir / "case1.nrrd").unlink()
    with pytest.raises(JobError, match=r"case 'case1' image file not found: .*case1\.nrrd"):
        load_cohort(cohort_dir / "manifest.json", ["blob"])


def test_missing_segmentation_names_the_file(cohort_dir):
    (cohort_dir / "case2.seg.nrrd").unlink()
    with pytest.raises(JobError, match=r"case 'case2' segmentation file not found: .*case2\.seg\.nrrd"):
        load_cohort(cohort_dir / "manifest.json", ["blob"])


def test_structure_absent_from_one_label_file(cohort_dir):
    image = Volume(np.zeros((4, SIZE, SIZE), np.float32), spacing=(1, 1, 2))
    only_blob = Segmentation.on_grid(image)
    only_blob.add("blob", np.ones((4, SIZE, SIZE), bool))
    write_segmentation(only_blob, cohort_dir / "case1.seg.nrrd")
    with pytest.raises(JobError, match=r"case1\.seg\.nrrd: no segment named 'ring' \(segments: blob\)"):
        load_cohort(cohort_dir / "manifest.json", ["blob", "ring"])
    load_cohort(cohort_dir / "manifest.json", ["blob"])  # the job does not need "ring"


def test_structure_not_in_the_manifest(tiny_cohort):
    with pytest.raises(JobError, match="structure\\(s\\) liver not in the manifest's structures \\(blob, ring\\)"):
        load_cohort(tiny_cohort, ["blob", "liver"])


def test_labels_on_a_different_grid(cohort_dir):
    shifted = Volume(np.zeros((4, SIZE, SIZE), np.float32), spacing=(1, 1, 2), origin=(5, 0, 0))
    segmentation = Segmentation.on_grid(shifted)
    segmentation.add("blob", np.ones((4, SIZE, SIZE), bool))
    segmentation.add("ring", np.ones((4, SIZE, SIZE), bool))
    write_segmentation(segmentation, cohort_dir / "case0.seg.nrrd")
    with pytest.raises(JobError, match=r"case0\.seg\.nrrd: geometry differs from the image's"):
        load_cohort(cohort_dir / "manifest.json", ["blob"])


def test_zero_labelled_training_cases(cohort_dir):
    data = manifest(cohort_dir)
    for case in data["cases"]:
        if case["split"] == "train":
            case["segmentation"] = None
    with pytest.raises(JobError, match="no labelled training case"):
        load_cohort(rewrite(cohort_dir, data), ["blob"])


def test_structure_empty_in_every_training_case(cohort_dir):
    for index in (0, 1):
        image = Volume(np.zeros((4, SIZE, SIZE), np.float32), spacing=(1, 1, 2))
        write_volume(image, cohort_dir / f"case{index}.nrrd")
        segmentation = Segmentation.on_grid(image)
        segmentation.add("blob", np.ones((4, SIZE, SIZE), bool))
        segmentation.add("ring", np.zeros((4, SIZE, SIZE), bool))
        write_segmentation(segmentation, cohort_dir / f"case{index}.seg.nrrd")
    with pytest.raises(JobError, match="structure\\(s\\) ring empty in every labelled training case"):
        load_cohort(cohort_dir / "manifest.json", ["blob", "ring"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(version=2), '"version": 1'),
    (lambda d: d.update(structures=[]), "structures"),
    (lambda d: d["cases"][0].update(split="training"), "split 'training'; splits: train, val, test, unlabelled"),
    (lambda d: d["cases"][1].update(id="case0"), "duplicate case ids case0"),
    (lambda d: d["cases"][0].update(extra=1), "unknown keys \\['extra'\\]"),
    (lambda d: d["cases"][3].update(segmentation="case0.seg.nrrd"), "'unlabelled' but has a segmentation"),
])
def test_malformed_manifests(cohort_dir, change, message):
    data = manifest(cohort_dir)
    change(data)
    with pytest.raises(JobError, match=message):
        read_manifest(rewrite(cohort_dir, data))


def test_unreadable_manifest(tmp_path):
    with pytest.raises(JobError, match="cohort manifest not found"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(JobError, match="not a readable JSON cohort manifest"):
        read_manifest(tmp_path / "manifest.json")


def test_plain_label_volume_maps_values_to_manifest_structures(tmp_path):
    image_name, _ = blob_case(tmp_path, "c", seed=0)
    labels = np.zeros((4, SIZE, SIZE), np.uint8)
    labels[:, :4], labels[:, 4:8] = 1, 2                      # 1 = blob, 2 = ring
    write_volume(Volume(labels, spacing=(1, 1, 2)), tmp_path / "c_labels.nrrd")
    path = write_manifest(tmp_path, [{"id": "c", "image": image_name, "segmentation": "c_labels.nrrd",
                                      "split": "train"}])
    cohort = load_cohort(path, ["ring", "blob"])
    mapped = read_label_map(cohort.cases[0], cohort, ["ring", "blob"])  # classes follow the job's order
    assert (mapped[:, :4] == 2).all() and (mapped[:, 4:8] == 1).all() and (mapped[:, 8:] == 0).all()
    labels[0, 0, 0] = 7
    write_volume(Volume(labels, spacing=(1, 1, 2)), tmp_path / "c_labels.nrrd")
    with pytest.raises(JobError, match=r"c_labels\.nrrd: label values \[7.0\] are not 1...2"):
        load_cohort(path, ["blob"])


def test_slice_dataset_streams_resized_normalised_slices(tiny_cohort):
    cohort = load_cohort(tiny_cohort, ["blob", "ring"])
    dataset = SliceDataset(cohort, cohort.select("train", labelled=True), ["blob", "ring"], image_size=16,
                           cache_size=1)
    assert len(dataset) == 2 * 4
    item = dataset[5]
    assert item["case"] == 1 and item["slice"] == 1
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 1.0
    assert item["label"].shape == (1, 16, 16) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) == {0, 1, 2}
    # The disc is bright: its labelled pixels are brighter than the background.
    image, label = item["image"][0], item["label"][0]
    assert image[label == 1].mean() > image[label == 0].mean() + 0.3
    assert list(dataset._cache) == [1]  # LRU holds one volume
    assert dataset[0]["case"] == 0 and list(dataset._cache) == [0]
    volume = dataset.case_slices(0)
    assert volume["image"].shape == (4, 1, 16, 16) and volume["label"].shape == (4, 1, 16, 16)


def test_unlabelled_slices_have_no_label(tiny_cohort):
    cohort = load_cohort(tiny_cohort, ["blob"])
    dataset = SliceDataset(cohort, cohort.select("unlabelled"), ["blob"], image_size=SIZE, labelled=False)
    assert set(dataset[0]) == {"image", "case", "slice"}
    with pytest.raises(JobError, match="unlabelled cases"):
        SliceDataset(cohort, cohort.select("unlabelled"), ["blob"], image_size=SIZE)
