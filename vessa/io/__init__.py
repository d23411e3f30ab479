"""Volumes, segmentations and template banks on disk, with their geometry kept exactly."""

from vessa.io.atomic import atomic_path, atomic_paths, check_output
from vessa.io.bank import BankEntry, Template, TemplateBank
from vessa.io.formats import VOLUME_SUFFIXES, read_volume, require_file, write_volume
from vessa.io.segmentation import Segment, Segmentation, read_segmentation, write_segmentation
from vessa.io.volume import Volume

__all__ = [
    "VOLUME_SUFFIXES",
    "BankEntry",
    "Segment",
    "Segmentation",
    "Template",
    "TemplateBank",
    "Volume",
    "atomic_path",
    "atomic_paths",
    "check_output",
    "read_segmentation",
    "read_volume",
    "require_file",
    "write_segmentation",
    "write_volume",
]
