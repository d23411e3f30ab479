"""Modality of a volume node: from DICOM tags when loaded from DICOM, else by the model's CT rule
(`vessa.plausibility`, which also says when two modalities differ)."""

from __future__ import annotations

import numpy as np
import slicer

# Where Slicer keeps a DICOM series' modality: on the volume node (some importers) or on its
# subject hierarchy item (the DICOM scalar volume plugin); users may set VESSA.Modality.
MODALITY_ATTRIBUTES = ("VESSA.Modality", "DICOM.Modality")


def volumeModality(volumeNode, array: np.ndarray | None = None) -> str:
    """ "CT", "MR", ... from the node's attributes; without them "CT" when the voxel values
    follow the model's CT rule (air below -500 HU), else "" (unknown, not CT)."""
    for attribute in MODALITY_ATTRIBUTES:
        value = volumeNode.GetAttribute(attribute)
        if value:
            return value.strip().upper()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volumeNode.GetScene())
    if hierarchy is not None:
        item = hierarchy.GetItemByDataNode(volumeNode)
        value = hierarchy.GetItemAttribute(item, "DICOM.Modality") if item else ""
        if value:
            return value.strip().upper()
    from vessa.plausibility import image_modality

    return image_modality(slicer.util.arrayFromVolume(volumeNode) if array is None else array)
