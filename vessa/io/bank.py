"""Template bank: a folder of exemplar image + `.seg.nrrd` pairs indexed by `bank.json`.

Layout::

    bank/
      bank.json            {"version": 1, "entries": [{"id", "image", "segmentation",
                            "modality", "segments": [{"name", "description", "terminology"}]}]}
      <id>.nrrd            exemplar image
      <id>.seg.nrrd        its segmentation (same grid)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vessa.errors import BankError, InputError
from vessa.io.atomic import atomic_path, check_output
from vessa.io.formats import read_volume, write_volume
from vessa.io.segmentation import Segmentation, read_segmentation, write_segmentation
from vessa.io.terminology import same_structure
from vessa.io.volume import Volume

INDEX_NAME = "bank.json"
INDEX_VERSION = 1


@dataclass
class Template:
    """One exemplar: an image, the boolean mask (k, j, i) of one structure on its grid, the text."""

    image: Volume
    mask: np.ndarray
    name: str
    description: str = ""
    case_id: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim == 2:
            self.mask = self.mask[np.newaxis]
        if self.mask.shape != self.image.shape:
            raise BankError(
                f"template {self.case_id or '?'}/{self.name}: mask shape {self.mask.shape} "
                f"does not match its image {self.image.shape}"
            )
        if not self.mask.any():
            raise BankError(f"template {self.case_id or '?'}/{self.name}: the mask is empty")

    @property
    def text(self) -> str:
        """The text prompt of this template: its description if any, else its name."""
        return self.description or self.name


@dataclass
class BankEntry:
    """One indexed case of a bank: file names relative to the bank folder and its segments
    (name, description, Slicer terminology entry; banks written before terminology lack it)."""

    id: str
    image: str
    segmentation: str
    modality: str = ""
    segments: list[dict] = field(default_factory=list)

    def segment_names(self) -> list[str]:
        """Names of the segments in this case."""
        return [s["name"] for s in self.segments]


class TemplateBank:
    """A template bank folder: create, open, add cases, list names, load templates by name."""

    def __init__(self, root: str | os.PathLike, entries: list[BankEntry] | None = None):
        self.root = Path(root)
        self.entries: list[BankEntry] = list(entries or [])

    @classmethod
    def create(cls, root: str | os.PathLike) -> TemplateBank:
        """A new empty bank in `root` (created if missing; an existing bank there is an error)."""
        root = Path(root)
        if (root / INDEX_NAME).exists():
            raise BankError(f"{root}: a template bank already exists there")
        try:
            check_output(root / INDEX_NAME, "template bank")
        except InputError as error:
            raise BankError(str(error)) from None
        bank = cls(root)
        bank.save()
        return bank

    @classmethod
    def open(cls, root: str | os.PathLike) -> TemplateBank:
        """Open the bank in `root`; BankError if the folder or its index is missing or invalid."""
        root = Path(root)
        index = root / INDEX_NAME
        if not index.is_file():
            raise BankError(f"{root}: not a template bank (no {INDEX_NAME})")
        try:
            data = json.loads(index.read_text())
            if not isinstance(data, dict):
                raise BankError(f"{index}: invalid bank index (a JSON {type(data).__name__}, not an object)")
            if data.get("version") != INDEX_VERSION:
                raise BankError(f"{index}: unsupported bank version {data.get('version')!r}")
            entries = [BankEntry(**entry) for entry in data["entries"]]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise BankError(f"{index}: invalid bank index ({error})") from None
        for entry in entries:
            for name in (entry.image, entry.segmentation):
                if not (root / name).is_file():
                    raise BankError(f"{root}: case {entry.id!r} lists a missing file {name}")
        return cls(root, entries)

    def save(self) -> None:
        """Write `bank.json` atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"version": INDEX_VERSION, "entries": [asdict(entry) for entry in self.entries]}
        with atomic_path(self.root / INDEX_NAME) as tmp:
            tmp.write_text(json.dumps(data, indent=2))

    def add(self, image: Volume, segmentation: Segmentation, case_id: str, modality: str = "",
            descriptions: dict[str, str] | None = None) -> BankEntry:
        """Copy an image and its segmentation into the bank as case `case_id` and index it."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", case_id):
            raise BankError(f"case id {case_id!r} must be letters, digits, '.', '_' or '-'")
        if any(entry.id == case_id for entry in self.entries):
            raise BankError(f"{self.root}: case {case_id!r} is already in the bank")
        image.require_finite(f"image of case {case_id}")
        image.require_same_grid(segmentation.geometry(), f"segmentation of case {case_id}")
        descriptions = descriptions or {}
        for segment in segmentation.segments:
            segment.description = descriptions.get(segment.name, segment.description)
            if not segment.mask.any():
                raise BankError(f"case {case_id}: segment {segment.name!r} is empty")
        if not segmentation.segments:
            raise BankError(f"case {case_id}: the segmentation has no segments")
        entry = BankEntry(case_id, f"{case_id}.nrrd", f"{case_id}.seg.nrrd", modality,
                          [{"name": s.name, "description": s.description, "terminology": s.terminology}
                           for s in segmentation.segments])
        write_volume(image, self.root / entry.image)
        write_segmentation(segmentation, self.root / entry.segmentation)
        self.entries.append(entry)
        self.save()
        return entry

    def names(self) -> list[str]:
        """All segment names in the bank, sorted, without duplicates."""
        return sorted({name for entry in self.entries for name in entry.segment_names()})

    def templates(self, name: str, exclude_case: str | None = None, terminology: str = "") -> list[Template]:
        """Every exemplar of the structure `name` with Slicer terminology entry `terminology` (the
        codes decide where both sides have them, else the name: `same_structure`), read from disk."""
        if not self.entries:
            raise BankError(f"{self.root}: the template bank is empty")
        templates = []
        for entry in self.entries:
            if entry.id == exclude_case:
                continue
            matches = [s for s in entry.segments
                       if same_structure(name, terminology, s["name"], s.get("terminology", ""))]
            if not matches:
                continue
            try:
                image = read_volume(self.root / entry.image)
                segmentation = read_segmentation(self.root / entry.segmentation)
            except InputError as error:
                raise BankError(f"{self.root}: case {entry.id!r}: {error}") from None
            image.require_same_grid(segmentation.geometry(), f"segmentation of bank case {entry.id}")
            segment = segmentation.get(matches[0]["name"])
            templates.append(Template(image, segment.mask, segment.name, matches[0].get("description", ""),
                                      entry.id, entry.modality))
        if not templates:
            raise BankError(f"no template named {name!r} in {self.root} (segments match by terminology codes, "
                            f"else by name); names: {', '.join(self.names())}")
        return templates
