"""numpy/`vessa.io.Volume` <-> `vtkOrientedImageData`, and resampling onto a segmentation's grid.

A segmentation keeps its labelmaps in its own reference geometry (origin, spacing, axes,
extent), which may differ from the source volume's grid (another reference volume, oversampling,
a parent transform). Results on the source grid are brought onto that geometry with Slicer's own
`vtkOrientedImageDataResample`, so the segment editor sees them exactly as its own effects' output.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from vessa.errors import GeometryError
from vessa.io import Volume


def arrayFromOrientedImage(image) -> np.ndarray:
    """A (k, j, i) numpy view of a single-component `vtkOrientedImageData`'s voxels."""
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def orientedImageFromVolume(volume: Volume, vtkType: int = vtk.VTK_FLOAT):
    """A `vtkOrientedImageData` copy of `volume` (RAS geometry, extent starting at 0)."""
    k, j, i = volume.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(i, j, k)
    image.AllocateScalars(vtkType, 1)
    arrayFromOrientedImage(image)[:] = volume.array
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(volume.ijk_to_ras()))
    return image


def referenceGeometry(segmentationNode, vtkType: int = vtk.VTK_FLOAT):
    """An allocated, zero-filled image on the segmentation's reference geometry (full extent).

    GeometryError when the segmentation has none (the Segment Editor sets it when a source
    volume is selected).
    """
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = segmentationNode.GetSegmentation().GetConversionParameter(parameter)
    image = slicer.vtkOrientedImageData()
    if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, True, vtkType, 1):
        raise GeometryError(
            f"segmentation {segmentationNode.GetName()!r} has no reference geometry; select a source volume "
            "in the Segment Editor first"
        )
    arrayFromOrientedImage(image)[:] = 0
    return image


def transformBetween(sourceNode, targetNode):
    """The transform from `sourceNode`'s coordinates to `targetNode`'s, or None when both share
    one parent transform (or none)."""
    sourceParent = sourceNode.GetParentTransformNode()
    targetParent = targetNode.GetParentTransformNode()
    if sourceParent is targetParent:
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(sourceParent, targetParent, transform)
    return transform


def matrixBetween(sourceNode, targetNode=None) -> np.ndarray:
    """The 4x4 matrix from `sourceNode`'s coordinates to `targetNode`'s (None: world), copied
    now, so that a worker thread holds numbers and never a VTK transform the scene may change
    meanwhile. GeometryError when the transforms between them are not linear."""
    matrix = vtk.vtkMatrix4x4()
    sourceParent = sourceNode.GetParentTransformNode()
    targetParent = targetNode.GetParentTransformNode() if targetNode is not None else None
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(sourceParent, targetParent, matrix):
        target = f"{targetNode.GetName()!r}" if targetNode is not None else "the world"
        raise GeometryError(
            f"the transform from {sourceNode.GetName()!r} to {target} is not linear; harden it (Transforms module) "
            "before VESSA auto-segment"
        )
    return slicer.util.arrayFromVTKMatrix(matrix)


def placedInWorld(volume: Volume, toWorld: np.ndarray) -> Volume:
    """`volume`'s voxels (not copied) with its geometry moved by the 4x4 matrix `toWorld`."""
    return Volume.from_ijk_to_ras(volume.array, np.asarray(toWorld) @ volume.ijk_to_ras())


def resampleOnto(volume: Volume, reference, transform: np.ndarray | None = None):
    """`volume` (values on the source grid) linearly resampled onto `reference`'s geometry and
    extent, optionally moved by the 4x4 matrix `transform` first; float32 `vtkOrientedImageData`,
    0 outside."""
    source = orientedImageFromVolume(volume.with_array(volume.array.astype(np.float32, copy=False)))
    output = slicer.vtkOrientedImageData()
    move = None
    if transform is not None:
        move = vtk.vtkTransform()
        move.SetMatrix(slicer.util.vtkMatrixFromArray(transform))
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        source, reference, output, True, False, move, 0.0
    ):
        raise GeometryError("the result could not be resampled onto the segmentation's geometry")
    return output


def binaryLabelmap(probability, threshold: float):
    """uint8 `vtkOrientedImageData` (1 where `probability` >= `threshold`) on the same geometry."""
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(probability.GetExtent())
    labelmap.SetSpacing(probability.GetSpacing())
    labelmap.SetOrigin(probability.GetOrigin())
    labelmap.CopyDirections(probability)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    arrayFromOrientedImage(labelmap)[:] = arrayFromOrientedImage(probability) >= threshold
    return labelmap


def restoreSlices(image, labelmap: np.ndarray, toSource: np.ndarray, axis: int, indices) -> None:
    """Set the voxels of `image` (a `vtkOrientedImageData`) whose centre lies in one of the source
    slices `indices` along array axis `axis` (nearest slice) to `labelmap` (bool, same voxels)
    as 1.0 / 0.0. toSource: 4x4 matrix from `image`'s coordinates to the source volume's IJK.

    A result resampled onto a segmentation geometry other than the source grid (finer, rotated)
    would otherwise blur the slices the user drew; this puts them back as they were."""
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    row = (np.asarray(toSource) @ slicer.util.arrayFromVTKMatrix(matrix))[2 - axis]  # (k, j, i) axis -> IJK row
    extent = image.GetExtent()
    i = np.arange(extent[0], extent[1] + 1, dtype=float)
    j = np.arange(extent[2], extent[3] + 1, dtype=float)[:, None]
    values = arrayFromOrientedImage(image)
    plane = row[0] * i + row[1] * j  # one (j, i) plane at a time keeps the memory small
    for position, k in enumerate(range(extent[4], extent[5] + 1)):
        nearest = np.floor(plane + row[2] * k + row[3] + 0.5).astype(int)
        restore = np.isin(nearest, indices)
        values[position][restore] = labelmap[position][restore]
