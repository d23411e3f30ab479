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


def nodeIjkToRas(volumeNode) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def nodeGeometry(volumeNode) -> Volume:
    """An all-zero uint8 volume on a volume node's grid (shape and geometry, no voxel copy)."""
    image = volumeNode.GetImageData()
    if image is None:
        raise InputError(f"volume node {volumeNode.GetName()!r} has no image data")
    shape = tuple(reversed(image.GetDimensions()))
    return Volume.from_ijk_to_ras(np.zeros(shape, np.uint8), nodeIjkToRas(volumeNode))


def _vtkCompatible(array: np.ndarray) -> np.ndarray:
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


def volumeToNode(volume: Volume, name: str = ""):
    """Add a `vtkMRMLScalarVolumeNode` holding a copy of `volume` to `slicer.mrmlScene`.

    bool voxels become uint8, float16 float32 and 64-bit integers int32 (InputError if they do
    not fit); every other dtype is kept.
    """
    return slicer.util.addVolumeFromArray(_vtkCompatible(volume.array), volume.ijk_to_ras(), name)


def nodeToVolume(volumeNode) -> Volume:
    """A copy of a scalar (or labelmap) volume node's voxels with its geometry."""
    geometry = nodeGeometry(volumeNode)
    components = volumeNode.GetImageData().GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"volume node {volumeNode.GetName()!r} has {components} components per voxel; "
            "only scalar volumes are supported"
        )
    return geometry.with_array(np.array(slicer.util.arrayFromVolume(volumeNode)))


def segmentationToNode(segmentation: Segmentation, referenceVolumeNode, name: str = ""):
    """Add a `vtkMRMLSegmentationNode` with every segment (mask, name, colour, description, terminology).

    The segmentation must lie on `referenceVolumeNode`'s grid (GeometryError otherwise); that
    volume also becomes the node's reference geometry, as the Segment Editor sets it.
    """
    nodeGeometry(referenceVolumeNode).require_same_grid(
        segmentation.geometry(), f"segmentation for volume {referenceVolumeNode.GetName()!r}"
    )
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    for segment in segmentation.segments:
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", segment.name, list(segment.color))
        if segment.description:
            segmentationNode.GetSegmentation().GetSegment(segmentId).SetTag(DESCRIPTION_TAG, segment.description)
        if segment.terminology:
            segmentationNode.GetSegmentation().GetSegment(segmentId).SetTerminology(segment.terminology)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            segment.mask.astype(np.uint8), segmentationNode, segmentId, referenceVolumeNode
        )
    return segmentationNode


def nodeToSegmentation(
    segmentationNode, referenceVolumeNode, segmentIds: Sequence[str] | None = None
) -> Segmentation:
    """The node's segments (all, or those in `segmentIds`) as masks on the reference volume's grid."""
    slicerSegmentation = segmentationNode.GetSegmentation()
    allIds = list(slicerSegmentation.GetSegmentIDs())
    segments = []
    for segmentId in allIds if segmentIds is None else segmentIds:
        segment = slicerSegmentation.GetSegment(segmentId)
        if segment is None:
            raise InputError(
                f"segmentation {segmentationNode.GetName()!r} has no segment {segmentId!r}; "
                f"ids: {', '.join(allIds) or '(none)'}"
            )
        mask = segmentMask(segmentationNode, segmentId, referenceVolumeNode)
        description = vtk.reference("")
        segment.GetTag(DESCRIPTION_TAG, description)
        segments.append(Segment(segment.GetName(), mask, tuple(segment.GetColor()), str(description),
                                segment.GetTerminology() or ""))
    return Segmentation.on_grid(nodeGeometry(referenceVolumeNode), segments)


def segmentMask(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """One segment as a bool (k, j, i) mask on a volume node's grid (nearest neighbour, the
    transform between the two nodes followed), like `slicer.util.arrayFromSegmentBinaryLabelmap`
    but without its temporary labelmap node, which leaves a display node behind in the scene."""
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    shape = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
    layer = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentationNode, segmentId, layer, False
    )
    if layer.GetPointData().GetScalars() is None or layer.GetNumberOfPoints() == 0:
        return np.zeros(shape, bool)
    values = arrayFromOrientedImage(layer)
    values[:] = values == segment.GetLabelValue()  # a shared layer holds several segments' labels
    reference = slicer.vtkOrientedImageData()
    reference.SetDimensions(*reversed(shape))
    reference.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(nodeIjkToRas(volumeNode)))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        layer, reference, resampled, False, False, transformBetween(segmentationNode, volumeNode), 0.0
    ):
        raise InputError(f"segment {segment.GetName()!r} could not be resampled onto {volumeNode.GetName()!r}")
    return arrayFromOrientedImage(resampled) != 0
