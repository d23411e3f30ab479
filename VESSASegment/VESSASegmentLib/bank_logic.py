"""BankLogic: a volume and its segmentation in the scene -> a case of a `vessa.io.TemplateBank`."""

from __future__ import annotations

import re
from pathlib import Path

from vessa.errors import BankError
from vessa.io import BankEntry, Segmentation, TemplateBank
from vessa.io.bank import INDEX_NAME

from . import scene_io
from .modality import volumeModality


class BankLogic:
    """Saves scene cases into a bank folder and opens banks (the folder is created if needed)."""

    @staticmethod
    def open(folder: str | Path) -> TemplateBank:
        """The bank in `folder` (BankError naming the folder if it is not one)."""
        return TemplateBank.open(folder)

    def save(self, folder: str | Path, volumeNode, segmentationNode, caseId: str = "") -> BankEntry:
        """Add the volume and its non-empty segments as one case (id: `caseId` or the volume's
        name made file-safe and unique); the bank is created if `folder` holds none yet."""
        if volumeNode is None or segmentationNode is None:
            raise BankError("saving templates needs a source volume and a segmentation")
        folder = Path(folder)
        bank = TemplateBank.open(folder) if (folder / INDEX_NAME).is_file() else TemplateBank.create(folder)
        image = scene_io.nodeToVolume(volumeNode)
        segmentation = scene_io.nodeToSegmentation(segmentationNode, volumeNode)
        filled = [segment for segment in segmentation.segments if segment.mask.any()]
        if not filled:
            raise BankError(f"segmentation {segmentationNode.GetName()!r} has no non-empty segment to save")
        caseId = caseId or self.caseIdFor(volumeNode.GetName(), [entry.id for entry in bank.entries])
        return bank.add(image, Segmentation.on_grid(image, filled), caseId, volumeModality(volumeNode, image.array))

    @staticmethod
    def caseIdFor(name: str, existing: list[str]) -> str:
        """`name` as a bank case id (letters, digits, . _ -), made unique among `existing`."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "case"
        candidate, number = base, 2
        while candidate in existing:
            candidate, number = f"{base}-{number}", number + 1
        return candidate
