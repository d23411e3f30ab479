"""Slicer scene nodes <-> `vessa.io` objects: the one place where MRML meets the core library.

Arrays are (k, j, i) on both sides. Nodes carry an IJK-to-RAS matrix, the core keeps LPS
origin/spacing/direction; `vessa.io.Volume` converts between the two, so oblique axes and
anisotropic spacing survive exactly. Geometry is the node's own IJK-to-RAS: parent transforms
are not applied, except between a segmentation and the volume its masks are taken on (as
Slicer's own export does). VESSATrain imports this module too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer
import vtk

from vessa.errors import InputError
from vessa.io import Segment, Segmentation, Volume
from vessa.io.segmentation import DESCRIPTION_TAG

from .oriented_image import arrayFromOrientedImage, transformBetween

_INT32 = np.iinfo(np.int32)


def node_ijk_to_ras(volume_node) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def node_geometry(volume_node) -> Volume:
    """An all-zero uint8 volume on a volume node's grid (shape and geometry, no voxel copy)."""
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"volume node {volume_node.GetName()!r} has no image data")
    shape = tuple(reversed(image.GetDimensions()))
    return Volume.from_ijk_to_ras(np.zeros(shape, np.uint8), node_ijk_to_ras(volume_node))


def _vtk_compatible(array: np.ndarray) -> np.ndarray:
    """`array` in a voxel type VTK images hold; conversions are lossless or raise InputError."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize == 8:
        # Slicer rejects 64-bit integer volumes; narrow them when no value changes.
        low, high = int(array.min()), int(array.max())
        if low < _INT32.min or high > _INT32.max:
            raise InputError(f"{array.dtype} voxel values {low}..{high} do not fit a Slicer volume (int32)")
        return array.astype(np.int32)
    return array


def volume_to_node(volume: Volume, name: str = ""):
    """Add a `vtkMRMLScalarVolumeNode` holding a copy of `volume` to `slicer.mrmlScene`.

    bool voxels become uint8, float16 float32 and 64-bit integers int32 (InputError if they do
    not fit); every other dtype is kept.
    """
    return slicer.util.addVolumeFromArray(_vtk_compatible(volume.array), volume.ijk_to_ras(), name)


def node_to_volume(volume_node) -> Volume:
    """A copy of a scalar (or labelmap) volume node's voxels with its geometry."""
    geometry = node_geometry(volume_node)
    components = volume_node.GetImageData().GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"volume node {volume_node.GetName()!r} has {components} components per voxel; "
            "only scalar volumes are supported"
        )
    return geometry.with_array(np.array(slicer.util.arrayFromVolume(volume_node)))


def segmentation_to_node(segmentation: Segmentation, reference_volume_node, name: str = ""):
    """Add a `vtkMRMLSegmentationNode` with every segment (mask, name, colour, description).

    The segmentation must lie on `reference_volume_node`'s grid (GeometryError otherwise); that
    volume also becomes the node's reference geometry, as the Segment Editor sets it.
    """
    node_geometry(reference_volume_node).require_same_grid(
        segmentation.geometry(), f"segmentation for volume {reference_volume_node.GetName()!r}"
    )
    segmentation_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    for segment in segmentation.segments:
        segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", segment.name, list(segment.color))
        if segment.description:
            segmentation_node.GetSegmentation().GetSegment(segment_id).SetTag(DESCRIPTION_TAG, segment.description)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            segment.mask.astype(np.uint8), segmentation_node, segment_id, reference_volume_node
        )
    return segmentation_node


def node_to_segmentation(
    segmentation_node, reference_volume_node, segment_ids: Sequence[str] | None = None
) -> Segmentation:
    """The node's segments (all, or those in `segment_ids`) as masks on the reference volume's grid."""
    slicer_segmentation = segmentation_node.GetSegmentation()
    all_ids = list(slicer_segmentation.GetSegmentIDs())
    segments = []
    for segment_id in all_ids if segment_ids is None else segment_ids:
        segment = slicer_segmentation.GetSegment(segment_id)
        if segment is None:
            raise InputError(
                f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}; "
                f"ids: {', '.join(all_ids) or '(none)'}"
            )
        mask = segment_mask(segmentation_node, segment_id, reference_volume_node)
        description = vtk.reference("")
        segment.GetTag(DESCRIPTION_TAG, description)
        segments.append(Segment(segment.GetName(), mask, tuple(segment.GetColor()), str(description)))
    return Segmentation.on_grid(node_geometry(reference_volume_node), segments)


def segment_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """One segment as a bool (k, j, i) mask on a volume node's grid (nearest neighbour, the
    transform between the two nodes followed), like `slicer.util.arrayFromSegmentBinaryLabelmap`
    but without its temporary labelmap node, which leaves a display node behind in the scene."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    layer = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, layer, False
    )
    if layer.GetPointData().GetScalars() is None or layer.GetNumberOfPoints() == 0:
        return np.zeros(shape, bool)
    values = arrayFromOrientedImage(layer)
    values[:] = values == segment.GetLabelValue()  # a shared layer holds several segments' labels
    reference = slicer.vtkOrientedImageData()
    reference.SetDimensions(*reversed(shape))
    reference.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(node_ijk_to_ras(volume_node)))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        layer, reference, resampled, False, False, transformBetween(segmentation_node, volume_node), 0.0
    ):
        raise InputError(f"segment {segment.GetName()!r} could not be resampled onto {volume_node.GetName()!r}")
    return arrayFromOrientedImage(resampled) != 0
