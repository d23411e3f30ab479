"""Slicer terminology entries, as the Segment Editor's terminology selector writes them."""

from __future__ import annotations


def terminology_entry(code: str, meaning: str, region: str = "^^") -> str:
    """An entry of Slicer's General Anatomy list: coded type `code` (SCT), optional anatomic region."""
    return (f"Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
            f"~SCT^{code}^{meaning}~^^~Anatomic codes - DICOM master list~{region}~^^")


LIVER = terminology_entry("10200004", "Liver")
LEBER = terminology_entry("10200004", "Leber")  # the same code, a German meaning
SPLEEN = terminology_entry("78961009", "Spleen")
MASS_IN_LIVER = terminology_entry("4147007", "Mass", region="SCT^10200004^Liver")
MASS_IN_LUNG = terminology_entry("4147007", "Mass", region="SCT^39607008^Lung")
TISSUE = terminology_entry("85756007", "Tissue")  # Slicer's default for a new segment
