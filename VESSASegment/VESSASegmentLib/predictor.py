"""The model behind the effect, as a Protocol, and PredictorLoader (vessa.model, cached per setting)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from vessa.io import Template, Volume


class PredictionResult(Protocol):
    """What `vessa.model.volume_segmenter.SegmentResult` provides: probability (float32 Volume on the
    input's grid), slice_confidence (one value per slice along array axis `axis`), seconds, and
    the device that computed it ("cpu" after an out-of-memory fallback from the GPU)."""

    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    axis: int
    device: str


class Predictor(Protocol):
    """`vessa.model.volume_segmenter.VolumeSegmenter`, or a stand-in in tests; `slice_step` and `device`
    (where each call starts) as there."""

    slice_step: int
    device: object

    def segment(
        self,
        image: Volume,
        templates: list[Template],
        text: str,
        progress: Callable[[float], None] | None = None,
        modality: str = "",
    ) -> PredictionResult: ...


class PredictorLoader:
    """Loads the model for (checkpoint, device) once and keeps the last one.

    load: `vessa.model.load_segmenter` (default), or any function with its signature.
    checkpoint "" with allowUntrained=True builds a randomly initialised model (testing only).
    sliceStep is set on the kept model (no reload, so its feature cache stays). A kept model
    whose `device` is no longer the one it was loaded on is loaded anew, so a model that moved
    to the CPU is never handed out for "cuda".
    """

    def __init__(self, load: Callable[..., Predictor] | None = None):
        self._load = load
        self._key: tuple[str, str, bool] | None = None
        self._predictor: Predictor | None = None
        self._loadedOn = ""

    def __call__(self, checkpoint: str, device: str, allowUntrained: bool = False, sliceStep: int = 1) -> Predictor:
        key = (checkpoint, device, allowUntrained)
        if key != self._key or str(self._predictor.device) != self._loadedOn:
            self._predictor, self._key = None, None  # free the old model before loading another
            load = self._load
            if load is None:
                from vessa.model import load_segmenter as load
            self._predictor = load(checkpoint or None, device=device, allow_untrained=allowUntrained)
            self._key, self._loadedOn = key, str(self._predictor.device)
        self._predictor.slice_step = sliceStep
        return self._predictor
