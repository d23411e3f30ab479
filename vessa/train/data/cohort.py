"""A training cohort: `manifest.json` listing images, their segmentations and splits.

    {"version": 1, "structures": ["liver", "spleen"],
     "cases": [{"id": "case01", "image": "images/case01.nrrd",
                "segmentation": "labels/case01.seg.nrrd", "modality": "CT", "split": "train"}, ...]}

Paths are relative to the manifest. `segmentation` is null for unlabelled cases. A `.seg.nrrd`
is matched to the structures by segment name; a plain label volume (NRRD, NIfTI, ...) holds
value v for `structures[v-1]`. `load_cohort` checks everything a job needs before it trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vessa.errors import JobError, VessaError
from vessa.io import Volume, read_segmentation, read_volume
from vessa.io.json_file import read_json

MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test", "unlabelled")
CASE_KEYS = ("id", "image", "segmentation", "modality", "split")


@dataclass(frozen=True)
class CohortCase:
    """One image (and its segmentation, if labelled) of a cohort; paths are absolute."""

    id: str
    image: Path
    segmentation: Path | None
    modality: str
    split: str

    @property
    def labelled(self) -> bool:
        """True if the case has a segmentation."""
        return self.segmentation is not None


@dataclass(frozen=True)
class Cohort:
    """The manifest's structure names and cases."""

    path: Path
    structures: list[str]
    cases: list[CohortCase]

    def select(self, split: str, labelled: bool | None = None) -> list[CohortCase]:
        """The cases of `split` (and, if given, only the labelled or only the unlabelled ones)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return [c for c in self.cases if c.split == split and (labelled is None or c.labelled == labelled)]


def _case(entry: object, index: int, root: Path, where: Path) -> CohortCase:
    if not isinstance(entry, dict):
        raise JobError(f"{where}: case {index} must be an object")
    unknown = sorted(set(entry) - set(CASE_KEYS))
    missing = [k for k in ("id", "image", "split") if k not in entry]
    if unknown or missing:
        raise JobError(f"{where}: case {index} has unknown keys {unknown} / misses {missing}; "
                       f"keys are {', '.join(CASE_KEYS)}")
    case_id, image, split = entry["id"], entry["image"], entry["split"]
    segmentation, modality = entry.get("segmentation"), entry.get("modality", "")
    if not isinstance(case_id, str) or not case_id.strip():
        raise JobError(f"{where}: case {index} needs a non-empty string id, got {case_id!r}")
    if split not in SPLITS:
        raise JobError(f"{where}: case {case_id!r} has split {split!r}; splits: {', '.join(SPLITS)}")
    if not isinstance(modality, str):
        raise JobError(f"{where}: case {case_id!r} modality must be a string, got {modality!r}")
    files = {"image": image, "segmentation": segmentation}
    for key, value in files.items():
        if value is None and key == "segmentation":
            continue
        if not isinstance(value, str) or not value.strip():
            raise JobError(f"{where}: case {case_id!r} {key} must be a path string, got {value!r}")
        path = (root / value).resolve()
        if not path.is_file():
            raise JobError(f"{where}: case {case_id!r} {key} file not found: {path}")
        files[key] = path
    if split == "unlabelled" and files["segmentation"] is not None:
        raise JobError(f"{where}: case {case_id!r} is in split 'unlabelled' but has a segmentation")
    return CohortCase(case_id, files["image"], files["segmentation"], modality, split)


def read_manifest(path: str | os.PathLike) -> Cohort:
    """Parse `manifest.json`: its format, case entries and that every listed file exists."""
    path = Path(path).resolve()
    data = read_json(path, "cohort manifest", JobError)
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        raise JobError(f"{path}: manifest must be an object with \"version\": {MANIFEST_VERSION}")
    structures = data.get("structures")
    if (not isinstance(structures, list) or not structures
            or not all(isinstance(s, str) and s.strip() for s in structures)
            or len(set(structures)) != len(structures)):
        raise JobError(f"{path}: \"structures\" must be a non-empty list of distinct names, got {structures!r}")
    entries = data.get("cases")
    if not isinstance(entries, list):
        raise JobError(f"{path}: \"cases\" must be a list")
    cases = [_case(entry, i, path.parent, path) for i, entry in enumerate(entries)]
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise JobError(f"{path}: duplicate case ids {', '.join(duplicates)}")
    return Cohort(path, list(structures), cases)


def read_label_map(case: CohortCase, cohort: Cohort, structures: list[str],
                   image: Volume | None = None) -> np.ndarray:
    """The case's labels as a uint8 array (k, j, i): 0 background, c for `structures[c-1]`.

    Where structures overlap, the later one in `structures` wins. With `image`, the labels
    must lie on its grid. Problems raise JobError naming the file (and structure).
    """
    path = case.segmentation
    if path is None:
        raise JobError(f"case {case.id!r} has no segmentation")
    try:
        if path.name.lower().endswith(".seg.nrrd"):
            segmentation = read_segmentation(path)
            grid = segmentation.geometry()
            masks = []
            for name in structures:
                try:
                    masks.append(segmentation.get(name).mask)
                except VessaError:
                    raise JobError(f"{path}: no segment named {name!r} "
                                   f"(segments: {', '.join(segmentation.names()) or 'none'})") from None
        else:
            grid = read_volume(path)
            values = np.unique(grid.array)
            extra = [v for v in values if v != 0 and not (v == int(v) and 1 <= v <= len(cohort.structures))]
            if extra:
                raise JobError(f"{path}: label values {[float(v) for v in extra[:5]]} are not 1..."
                               f"{len(cohort.structures)} (the manifest's structures)")
            masks = [grid.array == cohort.structures.index(name) + 1 for name in structures]
        if image is not None:
            image.require_same_grid(grid, str(path))
    except JobError:
        raise
    except VessaError as error:
        message = str(error)
        raise JobError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    labels = np.zeros(grid.shape, np.uint8)
    for index, mask in enumerate(masks, start=1):
        labels[mask] = index
    return labels


def load_cohort(path: str | os.PathLike, structures: list[str]) -> Cohort:
    """Read the manifest and check, before any training, that labelled training is possible.

    JobError (naming the file or structure) for: structures the manifest does not list, no
    labelled training case, a labelled case whose image or segmentation is unreadable, lacks a
    structure or lies on another grid, and a structure empty in every labelled training case.
    """
    cohort = read_manifest(path)
    absent = [s for s in structures if s not in cohort.structures]
    if absent:
        raise JobError(f"{cohort.path}: structure(s) {', '.join(absent)} not in the manifest's "
                       f"structures ({', '.join(cohort.structures)})")
    training = cohort.select("train", labelled=True)
    if not training:
        raise JobError(f"{cohort.path}: no labelled training case (a case with split \"train\" and a "
                       "segmentation)")
    present = np.zeros(len(structures), bool)
    for case in cohort.cases:
        if not case.labelled:
            continue
        try:
            image = read_volume(case.image)
        except VessaError as error:
            raise JobError(str(error)) from None
        labels = read_label_map(case, cohort, structures, image)
        if case.split == "train":
            present |= np.isin(np.arange(1, len(structures) + 1), labels)
    empty = [name for name, seen in zip(structures, present, strict=True) if not seen]
    if empty:
        raise JobError(f"{cohort.path}: structure(s) {', '.join(empty)} empty in every labelled "
                       "training case")
    return cohort
