"""Scene content for the VESSATrain tests: volumes and segmentations made with Slicer's own API."""

from __future__ import annotations

import numpy as np

SHAPE = (6, 9, 11)  # (k, j, i)
# Oblique axes and anisotropic spacing (0.7, 1.3, 2.9 mm), as a Slicer IJK-to-RAS matrix.
ROTATION, _ = np.linalg.qr(np.array([[0.9, -0.3, 0.2], [0.35, 0.8, -0.4], [-0.1, 0.45, 0.85]]))
IJK_TO_RAS = np.eye(4)
IJK_TO_RAS[:3, :3] = ROTATION @ np.diag([0.7, 1.3, 2.9])
IJK_TO_RAS[:3, 3] = (-20.125, 14.5, 33.0625)


def add_volume(slicer, name: str, array: np.ndarray, ijk_to_ras: np.ndarray = IJK_TO_RAS):
    return slicer.util.addVolumeFromArray(array, ijk_to_ras, name)


def add_segmentation(slicer, name: str, volumeNode, masks: dict[str, np.ndarray]):
    """A segmentation node made as the Segment Editor makes one: reference geometry, then labelmaps."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    for index, (segment_name, mask) in enumerate(masks.items()):
        segmentId = node.GetSegmentation().AddEmptySegment("", segment_name, [0.2 * index, 0.5, 0.9])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segmentId, volumeNode)
    return node


def box(lower, upper, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lower, upper, strict=True))] = True
    return mask


def make_cohort(slicer) -> dict:
    """Two labelled cases (int16 oblique; float32 on another grid) and one unlabelled uint8 volume.

    Returns the keyword arguments of `CohortExporter.export`.
    """
    rng = np.random.default_rng(7)
    ct = add_volume(slicer, "CT 1", rng.integers(-1024, 3000, SHAPE, dtype=np.int16))
    ct_seg = add_segmentation(slicer, "CT 1 segmentation", ct, {
        "liver": box((1, 2, 3), (5, 7, 9)), "spleen": box((0, 0, 0), (2, 3, 4)), "bone": box((4, 6, 8), (6, 9, 11))})
    other_grid = np.diag([1.5, 0.5, 3.0, 1.0])
    other_grid[:3, 3] = (5, -7, 9)
    mr = add_volume(slicer, "MR/2", rng.normal(size=(4, 8, 5)).astype(np.float32), other_grid)
    mr_seg = add_segmentation(slicer, "MR seg", mr, {
        "spleen": box((1, 1, 1), (3, 4, 4), (4, 8, 5)), "liver": box((0, 4, 0), (4, 8, 2), (4, 8, 5))})
    extra = add_volume(slicer, "CT 1", rng.integers(0, 255, (3, 4, 5), dtype=np.uint8))  # same name as case 1
    return {"labelled": [(ct, ct_seg), (mr, mr_seg)], "unlabelled": [extra], "structures": ["liver", "spleen"]}
