"""Scene volumes and segmentations -> a cohort folder (NRRD, .seg.nrrd, `manifest.json`) for a training job.

Layout (the manifest format is `vessa.train.data.cohort`'s):
    <folder>/images/<case>.nrrd, <folder>/labels/<case>.seg.nrrd, <folder>/manifest.json,
    <folder>/export_index.json  (content digest of every file written, to skip unchanged nodes)

Nodes are only read, never modified. Geometry comes from each node's IJK-to-RAS matrix through
`VESSASegmentLib.scene_io`, so oblique axes and anisotropic spacing are kept exactly.

A node is re-exported only if the digest of what would be written (voxels, geometry, segment
names, colours, descriptions) differs from the one recorded in the index. Node MTimes are not
used for this: renaming a segment or editing an array without `arrayFromVolumeModified` leaves
the node's MTime unchanged (measured with slicer-core), so an MTime check would keep stale files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from VESSASegmentLib import scene_io

from vessa.errors import InputError
from vessa.io import VOLUME_SUFFIXES, Segmentation, Volume, atomic_path, write_segmentation, write_volume
from vessa.train.data.cohort import MANIFEST_VERSION

INDEX_FILE = "export_index.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class ExportResult:
    """The manifest written and, relative to the cohort folder, the files written and those kept."""

    manifest: Path
    written: list[str]
    skipped: list[str]


def volumeDigest(volume: Volume) -> str:
    """SHA-256 of a volume's dtype, shape, geometry and voxels."""
    digest = hashlib.sha256(f"{volume.array.dtype.str}{volume.shape}".encode())
    digest.update(volume.ijk_to_lps().tobytes())
    digest.update(np.ascontiguousarray(volume.array).data)
    return digest.hexdigest()


def segmentationDigest(segmentation: Segmentation) -> str:
    """SHA-256 of a segmentation's grid and, per segment, name, colour, description and mask."""
    digest = hashlib.sha256(volumeDigest(segmentation.geometry()).encode())
    for segment in segmentation.segments:
        digest.update(json.dumps([segment.name, list(segment.color), segment.description]).encode())
        digest.update(np.packbits(segment.mask).data)
    return digest.hexdigest()


def _caseIds(names: Sequence[str]) -> list[str]:
    """File-name-safe, unique case ids from node or file names."""
    ids: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "case"
        candidate, number = base, 2
        while candidate.lower() in (i.lower() for i in ids):
            candidate, number = f"{base}_{number}", number + 1
        ids.append(candidate)
    return ids


def _volumeFileStem(path: Path) -> str:
    name = path.name
    return name[: -len(next(s for s in VOLUME_SUFFIXES if name.lower().endswith(s)))]


class CohortExporter:
    """Writes the labelled (volume, segmentation) pairs and unlabelled volumes of a scene as a cohort.

    folder: the cohort folder (created if needed). `check` raises InputError for inputs a job
    could not train on; `export` runs it first and then writes only what changed.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def check(labelled: Sequence[tuple], unlabelled: Sequence = (), structures: Sequence[str] = (),
              unlabelledFiles: Sequence[str | Path] = ()) -> None:
        """InputError with a message for the user if these inputs cannot make a training cohort.

        labelled: (volume node, segmentation node or None) pairs; unlabelled: volume nodes;
        structures: segment names to learn, which every labelled segmentation must have.
        """
        if not labelled:
            raise InputError("no labelled case: add at least one volume together with its segmentation")
        if not structures:
            raise InputError("no structure selected: tick the segment names to learn")
        volumes = [volume for volume, _ in labelled] + list(unlabelled)
        for volume in volumes:
            if volume.GetImageData() is None:
                raise InputError(f"volume {volume.GetName()!r} has no image data")
        twice = sorted({v.GetName() for v in volumes if sum(w is v for w in volumes) > 1})
        if twice:
            raise InputError(f"volume(s) {', '.join(map(repr, twice))} listed more than once; use each volume "
                             "in one case only")
        unpaired = [volume.GetName() for volume, segmentation in labelled if segmentation is None]
        if unpaired:
            raise InputError(f"volume(s) {', '.join(map(repr, unpaired))} marked labelled without a segmentation; "
                             "pick the segmentation of each labelled volume or list it as unlabelled")
        mismatches = []
        for volume, segmentation in labelled:
            names = CohortExporter.segmentNames(segmentation)
            missing = [name for name in structures if name not in names]
            if missing:
                mismatches.append(f"{segmentation.GetName()!r} (for {volume.GetName()!r}) lacks "
                                  f"{', '.join(map(repr, missing))}; its segments: {', '.join(names) or 'none'}")
        if mismatches:
            raise InputError("segment names do not match across cases: " + "; ".join(mismatches))
        for path in map(Path, unlabelledFiles):
            if not path.is_file() or not any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES):
                raise InputError(f"{path}: not a volume file ({', '.join(VOLUME_SUFFIXES)})")

    @staticmethod
    def segmentNames(segmentationNode) -> list[str]:
        """The segment names of a segmentation node, in its order."""
        segmentation = segmentationNode.GetSegmentation()
        return [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()]

    def export(self, labelled: Sequence[tuple], unlabelled: Sequence = (), structures: Sequence[str] = (),
               unlabelledFiles: Sequence[str | Path] = ()) -> ExportResult:
        """Check the inputs, write new or changed files, drop files of removed cases, write the manifest.

        Labelled cases get split "train" and only the `structures` segments; unlabelled volume
        nodes are written as images, `unlabelledFiles` are referenced where they are.
        """
        self.check(labelled, unlabelled, structures, unlabelledFiles)
        index = self._readIndex()
        files: dict[str, str] = {}  # relative path -> digest of its content
        written: list[str] = []
        cases = []
        nodes = [volume for volume, _ in labelled] + list(unlabelled)
        filesPaths = [Path(path).resolve() for path in unlabelledFiles]
        ids = _caseIds([n.GetName() for n in nodes] + [_volumeFileStem(p) for p in filesPaths])
        for case_id, volumeNode in zip(ids, nodes, strict=False):
            image = f"images/{case_id}.nrrd"
            self._write(image, scene_io.nodeToVolume(volumeNode), index, files, written)
            cases.append({"id": case_id, "image": image, "segmentation": None, "modality": "",
                          "split": "unlabelled"})
        for case, (volumeNode, segmentationNode) in zip(cases, labelled, strict=False):
            segmentIds = [segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
                           for name in structures]
            label = f"labels/{case['id']}.seg.nrrd"
            segmentation = scene_io.nodeToSegmentation(segmentationNode, volumeNode, segmentIds)
            self._write(label, segmentation, index, files, written)
            case.update(segmentation=label, split="train")
        for case_id, path in zip(ids[len(nodes):], filesPaths, strict=True):
            cases.append({"id": case_id, "image": str(path), "segmentation": None, "modality": "",
                          "split": "unlabelled"})
        for stale in set(index) - set(files):
            if re.fullmatch(r"(images|labels)/[A-Za-z0-9._-]+", stale):  # only files this class wrote
                (self.folder / stale).unlink(missing_ok=True)
        self._writeJson(INDEX_FILE, {"version": 1, "files": files})
        manifest = self._writeJson(MANIFEST_FILE, {"version": MANIFEST_VERSION, "structures": list(structures),
                                                    "cases": cases})
        return ExportResult(manifest, written, sorted(set(files) - set(written)))

    def _write(self, relative: str, content: Volume | Segmentation, index: dict[str, str],
               files: dict[str, str], written: list[str]) -> None:
        isVolume = isinstance(content, Volume)
        digest = volumeDigest(content) if isVolume else segmentationDigest(content)
        files[relative] = digest
        path = self.folder / relative
        if index.get(relative) == digest and path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if isVolume:
            write_volume(content, path)
        else:
            write_segmentation(content, path)
        written.append(relative)

    def _readIndex(self) -> dict[str, str]:
        try:
            index = json.loads((self.folder / INDEX_FILE).read_text(encoding="utf-8"))
            return {str(k): str(v) for k, v in index["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # no (readable) index: everything is written again

    def _writeJson(self, name: str, data: dict) -> Path:
        path = self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path
