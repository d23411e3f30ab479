"""CohortExporter on a real headless MRML scene: exact files, trainer-readable manifest, skips, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_scene import IJK_TO_RAS, make_cohort

from vessa.errors import InputError
from vessa.io import read_segmentation, read_volume


@pytest.fixture
def slicer(slicer_scene):
    import slicer

    return slicer


@pytest.fixture
def exporter_class(slicer_scene):
    from VESSATrainLib.cohort_exporter import CohortExporter

    return CohortExporter


@pytest.fixture
def cohort(slicer):
    return make_cohort(slicer)


def test_export_reads_back_bit_exact_with_geometry_and_names(slicer, exporter_class, cohort, tmp_path):
    from VESSASegmentLib import scene_io

    result = exporter_class(tmp_path).export(**cohort)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["structures"] == ["liver", "spleen"]
    assert [(c["id"], c["split"]) for c in manifest["cases"]] == [
        ("CT_1", "train"), ("MR_2", "train"), ("CT_1_2", "unlabelled")]
    assert sorted(result.written) == ["images/CT_1.nrrd", "images/CT_1_2.nrrd", "images/MR_2.nrrd",
                                      "labels/CT_1.seg.nrrd", "labels/MR_2.seg.nrrd"]
    for case, (volumeNode, segmentationNode) in zip(manifest["cases"], cohort["labelled"], strict=False):
        expected = scene_io.nodeToVolume(volumeNode)
        image = read_volume(tmp_path / case["image"])
        assert image.array.dtype == expected.array.dtype
        np.testing.assert_array_equal(image.array, expected.array)
        np.testing.assert_array_equal(image.ijk_to_ras(), expected.ijk_to_ras())
        labels = read_segmentation(tmp_path / case["segmentation"])
        assert labels.names() == ["liver", "spleen"]
        assert labels.geometry().same_grid(image, atol=0)
        for name in ("liver", "spleen"):
            segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            np.testing.assert_array_equal(labels.get(name).mask, mask != 0)
    np.testing.assert_allclose(read_volume(tmp_path / "images/CT_1.nrrd").ijk_to_ras(), IJK_TO_RAS, atol=1e-9)


def test_manifest_is_accepted_by_the_trainer(exporter_class, cohort, tmp_path):
    from vessa.train.data.cohort import load_cohort

    result = exporter_class(tmp_path).export(**cohort)
    loaded = load_cohort(result.manifest, ["liver", "spleen"])
    assert [case.id for case in loaded.select("train", labelled=True)] == ["CT_1", "MR_2"]
    assert [case.id for case in loaded.select("unlabelled")] == ["CT_1_2"]


def test_unchanged_nodes_are_not_written_again(slicer, exporter_class, cohort, tmp_path):
    exporter = exporter_class(tmp_path)
    exporter.export(**cohort)
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.nrrd")}

    again = exporter_class(tmp_path).export(**cohort)  # a new exporter: the index on disk decides
    assert again.written == []
    assert len(again.skipped) == 5
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.nrrd")} == stamps

    (ct, ct_seg), (mr, _) = cohort["labelled"]
    voxels = slicer.util.arrayFromVolume(mr)
    voxels[0, 0, 0] += 1  # an edit without arrayFromVolumeModified leaves the node's MTime as it was
    liver = ct_seg.GetSegmentation().GetSegment(ct_seg.GetSegmentation().GetSegmentIdBySegmentName("liver"))
    liver.SetColor(0.1, 0.2, 0.3)
    bone = ct_seg.GetSegmentation().GetSegment(ct_seg.GetSegmentation().GetSegmentIdBySegmentName("bone"))
    bone.SetName("femur")  # not exported: changes nothing
    changed = exporter.export(**cohort)
    assert sorted(changed.written) == ["images/MR_2.nrrd", "labels/CT_1.seg.nrrd"]
    assert read_volume(tmp_path / "images/MR_2.nrrd").array[0, 0, 0] == voxels[0, 0, 0]
    assert read_segmentation(tmp_path / "labels/CT_1.seg.nrrd").get("liver").color == pytest.approx((0.1, 0.2, 0.3))


def test_removed_cases_lose_their_files_and_folder_volumes_are_referenced(exporter_class, cohort, tmp_path):
    from vessa.io import Volume, write_volume

    folder_volume = write_volume(Volume(np.ones((2, 3, 4), np.float32)), tmp_path / "disk" / "scan 7.nii.gz")
    exporter = exporter_class(tmp_path / "cohort")
    exporter.export(**cohort)
    result = exporter.export(cohort["labelled"][:1], [], ["liver"], unlabelledFiles=[folder_volume])
    manifest = json.loads(result.manifest.read_text())
    assert manifest["cases"][1] == {"id": "scan_7", "image": str(folder_volume.resolve()), "segmentation": None,
                                    "modality": "", "split": "unlabelled"}
    assert sorted(p.relative_to(tmp_path / "cohort").as_posix() for p in (tmp_path / "cohort").rglob("*.nrrd")) == [
        "images/CT_1.nrrd", "labels/CT_1.seg.nrrd"]


def test_export_modifies_no_scene_node(slicer, exporter_class, cohort, tmp_path):
    nodes = [node for pair in cohort["labelled"] for node in pair] + cohort["unlabelled"]
    before = [(node.GetMTime(), slicer.util.arrayFromVolume(node).copy() if node.IsA("vtkMRMLVolumeNode") else None)
              for node in nodes]
    node_count = slicer.mrmlScene.GetNumberOfNodes()
    exporter_class(tmp_path).export(**cohort)
    assert slicer.mrmlScene.GetNumberOfNodes() == node_count
    for node, (mtime, array) in zip(nodes, before, strict=True):
        assert node.GetMTime() == mtime, node.GetName()
        if array is not None:
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)


BAD_INPUTS = [
    (lambda c: {**c, "labelled": []}, "no labelled case"),
    (lambda c: {**c, "labelled": [(c["labelled"][0][0], None)]}, r"marked labelled without a segmentation"),
    (lambda c: {**c, "structures": []}, "no structure selected"),
    (lambda c: {**c, "structures": ["liver", "bone"]},
     r"do not match across cases: 'MR seg' \(for 'MR/2'\) lacks 'bone'; its segments: spleen, liver"),
    (lambda c: {**c, "unlabelled": [c["labelled"][1][0]]}, r"'MR/2' listed more than once"),
    (lambda c: {**c, "unlabelledFiles": ["/nonexistent/scan.nrrd"]}, r"scan.nrrd: not a volume file"),
]


@pytest.mark.parametrize(("change", "message"), BAD_INPUTS)
def test_bad_input_is_refused_before_anything_is_written(exporter_class, cohort, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        exporter_class(tmp_path / "cohort").export(**change(cohort))
    assert not (tmp_path / "cohort").exists()


def test_volume_without_image_data_is_refused(slicer, exporter_class, cohort, tmp_path):
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' has no image data"):
        exporter_class(tmp_path).export(**{**cohort, "unlabelled": [empty]})
