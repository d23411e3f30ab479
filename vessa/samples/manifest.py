"""`samples.json`: the cases of one converted sample set, with where they came from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vessa.errors import InputError
from vessa.io import atomic_path

MANIFEST_NAME = "samples.json"
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class SampleCase:
    """One image with its segmentation, as converted into the cache.

    split: "train" (train and tune on it) or "heldout" (independent evaluation only).
    instances: for instance-labelled data, the label volume with one value per object.
    """

    case_id: str
    image: Path
    segmentation: Path
    modality: str
    segment_names: tuple[str, ...]
    split: str = "train"
    description: str = ""
    instances: Path | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"case {self.case_id}: split must be one of {SPLITS}, got {self.split!r}")

    def to_json(self, folder: Path) -> dict:
        """This case as JSON, with file paths relative to the set `folder`."""
        record = {
            "case_id": self.case_id,
            "image": self.image.relative_to(folder).as_posix(),
            "segmentation": self.segmentation.relative_to(folder).as_posix(),
            "modality": self.modality,
            "segment_names": list(self.segment_names),
            "split": self.split,
            "description": self.description,
        }
        if self.instances is not None:
            record["instances"] = self.instances.relative_to(folder).as_posix()
        return record

    @classmethod
    def from_json(cls, record: dict, folder: Path) -> SampleCase:
        """The case a `to_json` record describes, with paths resolved inside `folder`."""
        instances = record.get("instances")
        return cls(
            case_id=record["case_id"],
            image=folder / record["image"],
            segmentation=folder / record["segmentation"],
            modality=record["modality"],
            segment_names=tuple(record["segment_names"]),
            split=record["split"],
            description=record.get("description", ""),
            instances=None if instances is None else folder / instances,
        )

    def files(self) -> list[Path]:
        """Every file this case refers to."""
        return [self.image, self.segmentation] + ([self.instances] if self.instances else [])


def write_manifest(folder: Path, provenance: dict, cases: list[SampleCase]) -> Path:
    """Write `<folder>/samples.json`: `provenance` (source, archive, sha256, ...) plus the cases."""
    path = folder / MANIFEST_NAME
    document = {**provenance, "cases": [case.to_json(folder) for case in cases]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    return path


def read_manifest(folder: Path) -> tuple[dict, list[SampleCase]]:
    """The provenance fields and the cases of `<folder>/samples.json`."""
    path = folder / MANIFEST_NAME
    try:
        document = json.loads(path.read_text())
        cases = [SampleCase.from_json(record, folder) for record in document.pop("cases")]
    except FileNotFoundError:
        raise InputError(f"{path}: no sample manifest here") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: corrupt sample manifest ({error!r})") from None
    return document, cases


def is_complete(folder: Path, sha256: str | None = None) -> bool:
    """Whether `folder` holds a readable manifest whose files all exist.

    With `sha256`, the set must also have been converted from the archive with that SHA-256.
    """
    try:
        provenance, cases = read_manifest(folder)
    except InputError:
        return False
    if sha256 is not None and provenance.get("sha256") != sha256:
        return False
    return all(file.is_file() for case in cases for file in case.files())
