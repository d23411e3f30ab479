"""TemplateCollector: the exemplars of one structure, from other volumes in the scene or a bank."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer

from vessa.errors import BankError, InputError
from vessa.io import Template, TemplateBank, Volume
from vessa.plausibility import modality_warning

from . import scene_io
from .modality import volumeModality
from .terminology import Structure

# Segmentation nodes carrying this attribute are VESSA's own previews, never templates.
PREVIEW_ATTRIBUTE = "VESSA.Preview"


@dataclass
class TemplateCollection:
    """Templates of one structure and warnings about them (e.g. another modality)."""

    templates: list[Template]
    warnings: list[str] = field(default_factory=list)


class TemplateCollector:
    """Finds the templates of a structure (`terminology.Structure`: terminology codes, else the
    name; a plain name is a structure without codes).

    In the scene, a template is a non-empty segment of that structure in a segmentation whose
    reference volume (the volume it was drawn on) is not the target volume; the mask is taken
    on that volume's grid, whatever the segmentation's own geometry. A bank is searched the same
    way, with the terminology entries saved with its cases.
    """

    def sceneTemplatePairs(self, targetVolumeNode) -> list[tuple[object, object]]:
        """(segmentation node, its reference volume node) pairs usable as template sources."""
        pairs = []
        for segmentationNode in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
            if segmentationNode.GetAttribute(PREVIEW_ATTRIBUTE):
                continue
            volumeNode = segmentationNode.GetNodeReference(
                slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
            )
            if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
                continue
            if targetVolumeNode is not None and volumeNode.GetID() == targetVolumeNode.GetID():
                continue
            pairs.append((segmentationNode, volumeNode))
        return pairs

    def sceneNames(self, targetVolumeNode) -> list[str]:
        """Names of the segments other volumes' segmentations have (sorted, unique)."""
        names = set()
        for segmentationNode, _ in self.sceneTemplatePairs(targetVolumeNode):
            segmentation = segmentationNode.GetSegmentation()
            names.update(segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs())
        return sorted(names, key=str.lower)

    def hasSceneTemplates(self, structure: Structure | str, targetVolumeNode) -> bool:
        """Whether another volume's segmentation has a non-empty segment of `structure` (cheap:
        reads the segments' own labelmaps, resamples nothing)."""
        wanted = _structure(structure)
        for segmentationNode, _ in self.sceneTemplatePairs(targetVolumeNode):
            segmentation = segmentationNode.GetSegmentation()
            for segmentId in segmentation.GetSegmentIDs():
                if not wanted.matches(Structure.ofSegment(segmentation.GetSegment(segmentId))):
                    continue
                voxels = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)
                if voxels is not None and np.any(voxels == segmentation.GetSegment(segmentId).GetLabelValue()):
                    return True
        return False

    def fromScene(self, structure: Structure | str, targetVolumeNode) -> TemplateCollection:
        """Templates of `structure` from the scene; InputError listing the names there are if none."""
        wanted = _structure(structure)
        targetModality = volumeModality(targetVolumeNode)
        collection = TemplateCollection([])
        images: dict[str, tuple[Volume, str]] = {}
        for segmentationNode, volumeNode in self.sceneTemplatePairs(targetVolumeNode):
            segmentation = segmentationNode.GetSegmentation()
            matches = [
                segmentId
                for segmentId in segmentation.GetSegmentIDs()
                if wanted.matches(Structure.ofSegment(segmentation.GetSegment(segmentId)))
            ]
            for segmentId in matches:
                segment = scene_io.nodeToSegmentation(segmentationNode, volumeNode, [segmentId]).segments[0]
                if not segment.mask.any():
                    continue
                if volumeNode.GetID() not in images:
                    image = scene_io.nodeToVolume(volumeNode)
                    images[volumeNode.GetID()] = (image, volumeModality(volumeNode, image.array))
                image, modality = images[volumeNode.GetID()]
                template = Template(
                    image, segment.mask, segment.name, segment.description, volumeNode.GetName(), modality
                )
                collection.templates.append(template)
                self._checkModality(collection, template, targetVolumeNode.GetName(), targetModality)
        if not collection.templates:
            names = self.sceneNames(targetVolumeNode)
            raise InputError(
                f"no template for {wanted.name!r}: no other volume has a non-empty segment of that name or "
                "terminology; "
                f"segments on other volumes: {', '.join(names) or '(none)'}"
            )
        return collection

    def fromBank(self, bank: TemplateBank, structure: Structure | str, targetVolumeNode) -> TemplateCollection:
        """Templates of `structure` (terminology, else name) from a template bank (BankError
        listing the bank's names if none)."""
        wanted = _structure(structure)
        collection = TemplateCollection(bank.templates(wanted.name, terminology=wanted.terminology))
        targetModality = volumeModality(targetVolumeNode)
        for template in collection.templates:
            self._checkModality(collection, template, targetVolumeNode.GetName(), targetModality)
        return collection

    def collect(self, structure: Structure | str, targetVolumeNode, bank: TemplateBank | None) -> TemplateCollection:
        """From `bank` if given, else from the scene."""
        wanted = _structure(structure)
        if bank is None:
            return self.fromScene(wanted, targetVolumeNode)
        try:
            return self.fromBank(bank, wanted, targetVolumeNode)
        except BankError as error:
            raise InputError(str(error)) from None

    @staticmethod
    def _checkModality(collection: TemplateCollection, template: Template, targetName: str, targetModality: str):
        warning = modality_warning(template, targetName, targetModality)
        if warning:
            collection.warnings.append(warning)


def _structure(structure: Structure | str) -> Structure:
    return Structure(structure) if isinstance(structure, str) else structure
