"""Segmentations: .seg.nrrd round trips with overlaps, names, colours, descriptions; label volumes."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from terminology_entries import LIVER

from vessa.errors import GeometryError, InputError
from vessa.io import Segmentation, Volume, read_segmentation, write_segmentation, write_volume


@pytest.fixture
def grid() -> Volume:
    rotation = Rotation.from_rotvec([0.1, 0.4, -0.3]).as_matrix()
    return Volume(np.zeros((6, 9, 12), np.int16), (0.8, 0.6, 3.0), (-12.5, 40.25, 7.125), rotation)


def two_overlapping(grid: Volume) -> Segmentation:
    liver = np.zeros(grid.shape, bool)
    liver[1:4, 2:6, 3:9] = True
    kidney = np.zeros(grid.shape, bool)
    kidney[2:6, 4:9, 5:12] = True
    segmentation = Segmentation.on_grid(grid)
    segmentation.add("liver", liver, (0.9, 0.2, 0.1), description="the whole liver", terminology=LIVER)
    segmentation.add("left kidney", kidney)
    return segmentation


def test_seg_nrrd_round_trip_overlapping_segments(tmp_path, grid):
    segmentation = two_overlapping(grid)
    assert (segmentation.get("liver").mask & segmentation.get("left kidney").mask).any()
    read = read_segmentation(write_segmentation(segmentation, tmp_path / "s.seg.nrrd"))
    assert read.names() == ["liver", "left kidney"]
    assert read.shape == grid.shape
    for name in read.names():
        np.testing.assert_array_equal(read.get(name).mask, segmentation.get(name).mask)
        np.testing.assert_allclose(read.get(name).color, segmentation.get(name).color, atol=1e-6)
    assert read.get("liver").description == "the whole liver"
    assert read.get("liver").terminology == LIVER and read.get("left kidney").terminology == ""
    np.testing.assert_allclose(read.geometry().ijk_to_lps(), grid.ijk_to_lps(), atol=1e-12)


def test_seg_nrrd_header_is_slicer_readable(tmp_path, grid):
    import nrrd

    header = nrrd.read_header(str(write_segmentation(two_overlapping(grid), tmp_path / "s.seg.nrrd")))
    assert header["space"] == "left-posterior-superior"
    assert header["Segment0_Name"] == "liver"
    assert header["Segment1_Layer"] == "1"  # overlap forces a second layer, as Slicer does
    assert f"TerminologyEntry:{LIVER}|" in header["Segment0_Tags"]  # where Slicer reads it


def test_label_volume_reads_as_segments(tmp_path, grid):
    labels = np.zeros(grid.shape, np.uint8)
    labels[0, 0, :3] = 3
    labels[5, 8, -2:] = 7
    path = write_volume(grid.with_array(labels), tmp_path / "labels.nii.gz")
    read = read_segmentation(path, names={3: "caudate", 7: "putamen"})
    assert read.names() == ["caudate", "putamen"]
    assert read.get("putamen").mask.sum() == 2
    assert read_segmentation(path).names() == ["label_3", "label_7"]


def test_lookup_is_case_insensitive_and_lists_names(grid):
    segmentation = two_overlapping(grid)
    assert segmentation.get("Left Kidney").name == "left kidney"
    with pytest.raises(InputError, match="no segment named 'spleen'; segments: liver, left kidney"):
        segmentation.get("spleen")


def test_mask_volume_on_grid(grid):
    volume = two_overlapping(grid).mask_volume("liver")
    assert volume.array.dtype == np.uint8 and volume.array.sum() == 3 * 4 * 6
    assert volume.same_grid(grid)


def test_ill_segmentations(grid, tmp_path):
    segmentation = two_overlapping(grid)
    with pytest.raises(GeometryError, match="mask of 'x' has shape"):
        segmentation.add("x", np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match="already exists"):
        segmentation.add("liver", np.zeros(grid.shape, bool))
    with pytest.raises(InputError, match="segment name must not be empty"):
        segmentation.add(" ", np.zeros(grid.shape, bool))
    with pytest.raises(InputError, match="written as .seg.nrrd"):
        write_segmentation(segmentation, tmp_path / "s.nrrd")
    with pytest.raises(InputError, match="segmentation not found"):
        read_segmentation(tmp_path / "missing.seg.nrrd")
    broken = tmp_path / "broken.seg.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: what\n\n")
    with pytest.raises(InputError, match="broken.seg.nrrd: unreadable segmentation"):
        read_segmentation(broken)
