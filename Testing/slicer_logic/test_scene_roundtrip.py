"""vessa.io objects -> MRML nodes -> back, in a real headless scene: voxels and geometry exact."""

from __future__ import annotations

import numpy as np
import pytest

from vessa.errors import GeometryError, InputError
from vessa.io import Segment, Segmentation, Volume

SHAPE = (7, 11, 13)  # (k, j, i)


def rotation(axis, angle: float) -> np.ndarray:
    """Rotation matrix about `axis` by `angle` radians (Rodrigues)."""
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


@pytest.fixture
def scene_io(slicer_scene):
    from VESSASegmentLib import scene_io

    return scene_io


@pytest.fixture
def oblique_volume() -> Volume:
    """int16 volume, oblique axes (rotation about a non-axis vector), anisotropic spacing."""
    values = np.random.default_rng(0).integers(-1024, 3072, size=SHAPE, dtype=np.int16)
    return Volume(
        values, spacing=(0.7, 0.9, 2.5), origin=(-12.5, 30.25, 7.0), direction=rotation((1.0, 2.0, 3.0), 0.6)
    )


@pytest.fixture
def two_segments(oblique_volume: Volume) -> Segmentation:
    """Two overlapping box segments with their own colours, one with a description."""
    liver = np.zeros(SHAPE, bool)
    liver[1:5, 2:9, 3:10] = True
    tumour = np.zeros(SHAPE, bool)
    tumour[3:6, 6:10, 8:12] = True
    return Segmentation.on_grid(
        oblique_volume,
        [
            Segment("liver", liver, (0.8, 0.3, 0.2), "the whole liver"),
            Segment("liver tumour", tumour, (0.1, 0.9, 0.4)),
        ],
    )


def test_volume_round_trip_is_exact(scene_io, oblique_volume):
    node = scene_io.volumeToNode(oblique_volume, "CT")
    assert node.GetName() == "CT"
    assert node.IsA("vtkMRMLScalarVolumeNode")
    np.testing.assert_allclose(scene_io.nodeIjkToRas(node), oblique_volume.ijk_to_ras(), rtol=0, atol=1e-9)
    back = scene_io.nodeToVolume(node)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, oblique_volume.array)
    np.testing.assert_allclose(back.ijk_to_lps(), oblique_volume.ijk_to_lps(), rtol=0, atol=1e-9)


def test_node_matrix_is_ras_of_lps_geometry(scene_io, oblique_volume):
    """RAS = diag(-1, -1, 1) LPS, checked against the node's own spacing/origin/directions."""
    node = scene_io.volumeToNode(oblique_volume)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(node.GetSpacing(), oblique_volume.spacing, atol=1e-9)
    np.testing.assert_allclose(node.GetOrigin(), lps_to_ras @ oblique_volume.origin, atol=1e-9)
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    np.testing.assert_allclose(directions, lps_to_ras @ oblique_volume.direction, atol=1e-9)


def test_node_to_volume_copies(scene_io, oblique_volume):
    node = scene_io.volumeToNode(oblique_volume)
    back = scene_io.nodeToVolume(node)
    back.array[:] = 0
    assert np.array_equal(scene_io.nodeToVolume(node).array, oblique_volume.array)


@pytest.mark.parametrize(
    ("array", "stored"),
    [
        (np.arange(24, dtype=np.int64).reshape(2, 3, 4) - 5, np.int32),
        (np.arange(24).reshape(2, 3, 4) % 2 == 0, np.uint8),
        (np.linspace(0, 1, 24, dtype=np.float16).reshape(2, 3, 4), np.float32),
        (np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4), np.float32),
        (np.arange(24, dtype=np.uint16).reshape(2, 3, 4), np.uint16),
    ],
)
def test_voxel_types_slicer_lacks_are_converted_losslessly(scene_io, array, stored):
    back = scene_io.nodeToVolume(scene_io.volumeToNode(Volume(array)))
    assert back.array.dtype == stored
    np.testing.assert_array_equal(back.array, array.astype(stored))


def test_int64_beyond_int32_is_rejected(scene_io):
    with pytest.raises(InputError, match="do not fit"):
        scene_io.volumeToNode(Volume(np.full((2, 2, 2), 2**40, np.int64)))


def test_vector_volume_is_rejected(scene_io, slicer_scene):
    import slicer

    node = slicer.util.addVolumeFromArray(
        np.zeros((2, 3, 4, 3), np.uint8), nodeClassName="vtkMRMLVectorVolumeNode"
    )
    with pytest.raises(InputError, match="3 components"):
        scene_io.nodeToVolume(node)


def test_volume_node_without_image_is_rejected(scene_io, slicer_scene):
    node = slicer_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' has no image data"):
        scene_io.nodeToVolume(node)


def test_segmentation_round_trip_is_exact(scene_io, oblique_volume, two_segments):
    volumeNode = scene_io.volumeToNode(oblique_volume, "CT")
    segmentationNode = scene_io.segmentationToNode(two_segments, volumeNode, "CT segmentation")
    assert segmentationNode.GetName() == "CT segmentation"
    assert segmentationNode.GetNodeReference("referenceImageGeometryRef") is volumeNode
    back = scene_io.nodeToSegmentation(segmentationNode, volumeNode)
    assert back.names() == ["liver", "liver tumour"]
    assert back.shape == SHAPE
    np.testing.assert_allclose(back.geometry().ijk_to_lps(), oblique_volume.ijk_to_lps(), rtol=0, atol=1e-9)
    for expected in two_segments.segments:
        segment = back.get(expected.name)
        assert segment.mask.dtype == bool
        np.testing.assert_array_equal(segment.mask, expected.mask)
        np.testing.assert_allclose(segment.color, expected.color, atol=1e-6)
        assert segment.description == expected.description
    assert np.any(back.get("liver").mask & back.get("liver tumour").mask)


def test_selected_segment_ids(scene_io, oblique_volume, two_segments):
    volumeNode = scene_io.volumeToNode(oblique_volume)
    segmentationNode = scene_io.segmentationToNode(two_segments, volumeNode)
    tumour_id = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("liver tumour")
    back = scene_io.nodeToSegmentation(segmentationNode, volumeNode, [tumour_id])
    assert back.names() == ["liver tumour"]
    np.testing.assert_array_equal(back.segments[0].mask, two_segments.get("liver tumour").mask)
    with pytest.raises(InputError, match="no segment 'missing'"):
        scene_io.nodeToSegmentation(segmentationNode, volumeNode, ["missing"])


def test_empty_segment_round_trips(scene_io, oblique_volume):
    volumeNode = scene_io.volumeToNode(oblique_volume)
    empty = Segmentation.on_grid(oblique_volume, [Segment("nothing yet", np.zeros(SHAPE, bool))])
    back = scene_io.nodeToSegmentation(scene_io.segmentationToNode(empty, volumeNode), volumeNode)
    assert back.names() == ["nothing yet"]
    assert not back.segments[0].mask.any()


def test_segmentation_on_another_grid_is_rejected(scene_io, oblique_volume, two_segments):
    shifted = Volume(
        oblique_volume.array, oblique_volume.spacing, oblique_volume.origin + 1.0, oblique_volume.direction
    )
    volumeNode = scene_io.volumeToNode(shifted, "shifted")
    with pytest.raises(GeometryError, match="'shifted'"):
        scene_io.segmentationToNode(two_segments, volumeNode)
