"""The sample sets in Slicer's Sample Data module: what is registered (SHA-256 of each set's
archive), and the module's button loading a fetched set into a real (headless) scene."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import slicer
from VESSASegmentLib import scene_io
from VESSASegmentLib.sample_data import CATEGORY, SampleDataRegistration

from vessa.io import Segmentation, Volume, write_segmentation, write_volume
from vessa.samples import SAMPLE_SETS


class RecordingSampleDataLogic:
    """Stands in for `SampleData.SampleDataLogic` (a Slicer module, not in slicer-core)."""

    registered: list[dict] = []

    @classmethod
    def registerCustomSampleDataSource(cls, **arguments):
        cls.registered.append(arguments)


def test_every_sample_set_is_registered_with_its_archive_and_sha256(tmp_path):
    RecordingSampleDataLogic.registered = []
    names = SampleDataRegistration(downloads=tmp_path).register(RecordingSampleDataLogic)
    assert names == [f"VESSA {name}" for name in SAMPLE_SETS]
    for entry, sampleSet in zip(RecordingSampleDataLogic.registered, SAMPLE_SETS.values(), strict=True):
        assert entry["category"] == CATEGORY
        assert entry["fileNames"] == [sampleSet.source.filename]
        assert entry["uris"] == [(tmp_path / sampleSet.source.filename).as_uri()]
        assert entry["checksums"] == [f"SHA256:{sampleSet.source.sha256}"]
        assert len(sampleSet.source.sha256) == 64 and callable(entry["customDownloader"])


def two_cases_on_one_image(folder: Path) -> list:
    """A fetched set whose two cases share one image (as Colin27's atlases do)."""
    image = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), spacing=(0.5, 0.6, 2.0))
    write_volume(image, folder / "head.nrrd")
    cases = []
    for case, threshold in (("inner", 80), ("outer", 20)):
        segmentation = Segmentation.on_grid(image)
        segmentation.add(case, image.array > threshold)
        write_segmentation(segmentation, folder / f"{case}.seg.nrrd")
        cases.append(SimpleNamespace(case_id=case, image=folder / "head.nrrd",
                                     segmentation=folder / f"{case}.seg.nrrd"))
    return cases


def test_the_button_fetches_the_set_and_loads_each_image_once_with_its_segmentations(slicer_scene, tmp_path):
    fetched = []
    cases = two_cases_on_one_image(tmp_path)
    registration = SampleDataRegistration(fetch=fetched.append, cases=lambda name: cases, downloads=tmp_path)
    RecordingSampleDataLogic.registered = []
    registration.register(RecordingSampleDataLogic)
    button = RecordingSampleDataLogic.registered[0]["customDownloader"]
    nodes = button(SimpleNamespace(sampleName="VESSA pyradiomics"))  # what the Sample Data module passes
    assert fetched == ["pyradiomics"]
    assert [node.GetName() for node in nodes] == ["head", "inner segmentation", "outer segmentation"]
    assert len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")) == 1
    image = scene_io.nodeToVolume(nodes[0])
    np.testing.assert_array_equal(image.array, np.arange(120, dtype=np.int16).reshape(4, 5, 6))
    for node, threshold in zip(nodes[1:], (80, 20), strict=True):
        segment = scene_io.nodeToSegmentation(node, nodes[0]).segments[0]
        np.testing.assert_array_equal(segment.mask, image.array > threshold)
