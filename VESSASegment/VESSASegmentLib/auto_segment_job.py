"""AutoSegmentJob: runs the model on a SegmentRequest in a worker thread (progress, cancel).

The GUI thread starts the job and polls `state()` from a QTimer; it never waits on the model.
Cancel takes effect at the model's next progress report (the callback raises inside the
model), or at the latest when the current segment is done; a cancelled job has no results.
CUDA out of memory while loading or running moves that segment's work to the CPU with a
message (`vessa.model.device.with_cpu_fallback`, the fallback VolumeSegmenter uses for its own
call after halving its batch: a result computed on the CPU by a GPU model is reported too); the
next segment and the next run start on the chosen device again, and warn again if they fall
back again.
A task with drawn slices (template source "drawn") runs the few-slice completer instead of the
template model; its drawn slices are put back exactly after the result is resampled onto the
segmentation's geometry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from vessa.plausibility import result_warnings

from .completer_loader import CompletionPrediction, DrawnSliceModel
from .oriented_image import placedInWorld, resampleOnto, restoreSlices
from .predictor import PredictionResult, Predictor
from .segment_request import CompletionSummary, SegmentRequest, SegmentTask, TaskResult
from .user_message import userMessage

log = logging.getLogger(__name__)

CPU_FALLBACK_MESSAGE = "the GPU ran out of memory: VESSA continued on the CPU (slower)"


class JobStatus(Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class JobState:
    """A snapshot for the GUI: status, overall progress 0..1, what is happening, results (when
    finished), the error message (when failed) and warnings (modality, CPU fallback, ...)."""

    status: JobStatus = JobStatus.PENDING
    fraction: float = 0.0
    message: str = ""
    results: list[TaskResult] = field(default_factory=list)
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


class _Cancelled(Exception):
    """Raised from the progress callback to stop the model when the job is cancelled."""


class AutoSegmentJob:
    """One run over the request's tasks, in order.

    predictorFor(device) -> Predictor (or, for tasks with drawn slices, DrawnSliceModel): loads
    (or returns the cached) model for a device; called in the worker thread, so loading a
    checkpoint does not block the GUI either.
    """

    def __init__(
        self, predictorFor: Callable[[str], Predictor | DrawnSliceModel], request: SegmentRequest, device: str
    ):
        self._predictorFor = predictorFor
        self._request = request
        self._device = device
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._state = JobState(warnings=list(dict.fromkeys(w for task in request.tasks for w in task.warnings)))
        self._thread = threading.Thread(target=self._run, name="VESSA auto-segment", daemon=True)

    def start(self) -> None:
        self._update(status=JobStatus.RUNNING, message="loading the model")
        self._thread.start()

    def cancel(self) -> None:
        """Ask the job to stop; `state()` says CANCELLED once the worker has stopped."""
        self._cancel.set()

    def state(self) -> JobState:
        """A consistent copy of the current state (safe to call from any thread)."""
        with self._lock:
            return replace(self._state, results=list(self._state.results), warnings=list(self._state.warnings))

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the worker ends (tests and scripts; the GUI polls instead)."""
        self._thread.join(timeout)
        return self.state()

    def _update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._state, name, value)

    def _warn(self, message: str) -> None:
        log.warning(message)
        with self._lock:
            if message not in self._state.warnings:
                self._state.warnings.append(message)

    def _run(self) -> None:
        try:
            results = [self._runTask(number, task) for number, task in enumerate(self._request.tasks)]
        except _Cancelled:
            self._update(status=JobStatus.CANCELLED, message="cancelled")
        except Exception as error:  # any failure ends the job with a message, never a traceback dialog
            self._update(status=JobStatus.FAILED, error=userMessage(error), message="failed")
        else:
            if self._cancel.is_set():
                self._update(status=JobStatus.CANCELLED, message="cancelled")
            else:
                self._update(status=JobStatus.FINISHED, fraction=1.0, results=results, message="done")

    def _runTask(self, number: int, task: SegmentTask) -> TaskResult:
        count = len(self._request.tasks)
        label = f"{task.segmentName!r}" + (f" ({number + 1}/{count})" if count > 1 else "")

        def progress(fraction: float) -> None:
            if self._cancel.is_set():
                raise _Cancelled()
            self._update(fraction=(number + min(max(fraction, 0.0), 1.0)) / count, message=f"segmenting {label}")

        progress(0.0)
        start = time.perf_counter()
        prediction = self._predict(task, progress)
        if self._cancel.is_set():
            raise _Cancelled()
        self._update(message=f"preparing the preview of {label}")
        probability, threshold = prediction.probability, self._request.threshold
        for warning in [*getattr(prediction, "warnings", []), *result_warnings(
            probability.array >= threshold, task.segmentName, threshold
        )]:
            self._warn(warning)
        onSegmentation = resampleOnto(probability, self._request.reference, self._request.toSegmentation)
        completion = None
        if isinstance(prediction, CompletionPrediction):
            toSource = np.linalg.inv(self._request.toSegmentation @ probability.ijk_to_ras())
            restoreSlices(onSegmentation, task.drawn.labelmap, toSource, prediction.axis, prediction.drawn)
            completion = CompletionSummary(
                prediction.axis, prediction.drawn, prediction.next_slice, prediction.encoded, task.drawn.sourceVolumeId
            )
        return TaskResult(
            task,
            onSegmentation,
            placedInWorld(probability, self._request.toWorld),
            prediction.slice_confidence,
            int(getattr(prediction, "axis", 0)),
            time.perf_counter() - start,
            completion,
        )

    def _predict(self, task: SegmentTask, progress: Callable[[float], None]) -> PredictionResult | CompletionPrediction:
        from vessa.model.device import with_cpu_fallback

        def run(device: str) -> PredictionResult | CompletionPrediction:
            model = self._predictorFor(device)
            prediction = self._call(model, task, progress)
            if str(model.device).startswith("cuda") and prediction.device == "cpu":  # the model fell back itself
                self._warn(CPU_FALLBACK_MESSAGE)
            return prediction

        return with_cpu_fallback(run, self._device, lambda: self._warn(CPU_FALLBACK_MESSAGE))

    def _call(self, model, task: SegmentTask, progress: Callable[[float], None]):
        """One model call for `task`: completion of its drawn slices, or segmentation from its templates."""
        image, modality = self._request.image, self._request.modality
        if task.drawn is not None:
            return model.complete(image, task.drawn, progress=progress, modality=modality)
        return model.segment(image, task.templates, task.text, progress=progress, modality=modality)
