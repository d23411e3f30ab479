"""DirectSegmenter: a trained stage-2 student run slice-wise over a volume, no templates needed.

Same result type as `vessa.model.volume.VolumeSegmenter` (`SegmentResult`), so the Segment
Editor effect can offer a trained student as a "direct" model next to VESSA. Preprocessing
is exactly the training input's (`vessa.train.data.slices`): slices along k (array axis 0),
intensities scaled between the volume's 0.5th/99.5th percentiles, each slice resized to the
student's image_size (bilinear) and the class probabilities resized back to the slice's own
rows x columns, so the probability volume lies on the input's exact grid.

`load_direct(checkpoint)` reads a stage-2 training checkpoint (`vessa train` output:
ckpt_step*.pt, last.pt, best.pt): of the semi-supervised methods it runs the EMA teacher (the
model validated as "dice"), of the supervised method its student (the same MONAI UNet).
slice_confidence: mean probability of the structure over the pixels predicted as it (0 on
slices without any).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vessa.errors import CheckpointError, InputError
from vessa.io import Volume
from vessa.model.volume import SegmentResult
from vessa.train.data.slices import normalise_intensities, resize_slices
from vessa.train.student import StudentConfig, StudentUNet

Progress = Callable[[float], None]


class DirectSegmenter:
    """Segments the structures a student was trained on (module docstring). `slice_step` is
    there for the effect's `Predictor` interface and not used: a student runs every slice."""

    slice_step = 1

    def __init__(self, student: StudentUNet, device: str | torch.device = "cpu", batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.device = torch.device(device)
        self.student = student.to(self.device).eval()
        self.batch_size = batch_size

    @property
    def structures(self) -> list[str]:
        return self.student.config.class_names[1:]

    def segment(self, image: Volume, templates: list[Any] | None = None, text: str = "",
                progress: Progress | None = None, modality: str = "") -> SegmentResult:
        """Probability of structure `text` (one of `structures`) on `image`'s grid. `templates`
        and `modality` are accepted for the effect's `Predictor` signature and ignored: a
        student needs no templates and normalises every volume as in training."""
        start = time.perf_counter()
        if text not in self.structures:
            raise InputError(f"direct model: structure {text!r} unknown; it segments {', '.join(self.structures)}")
        image.require_finite("the image")
        channel = self.student.config.class_names.index(text)
        unit = torch.from_numpy(normalise_intensities(image.array))[:, None]  # [n, 1, rows, cols]
        rows, cols = unit.shape[-2:]
        probability = np.zeros(image.shape, np.float32)
        size = self.student.config.image_size
        with torch.inference_mode():
            for first in range(0, unit.shape[0], self.batch_size):
                chunk, _ = resize_slices(unit[first : first + self.batch_size], None, size)
                probs = torch.softmax(self.student(chunk.to(self.device)).float(), dim=1)[:, channel : channel + 1]
                back = F.interpolate(probs, size=(rows, cols), mode="bilinear", align_corners=False)
                probability[first : first + len(chunk)] = back[:, 0].clamp(0, 1).cpu().numpy()
                if progress:
                    progress(min((first + len(chunk)) / unit.shape[0], 0.999))
        predicted = probability >= 0.5
        counts = predicted.sum(axis=(1, 2))
        confidence = np.where(counts > 0, (probability * predicted).sum(axis=(1, 2)) / np.maximum(counts, 1), 0.0)
        if progress:
            progress(1.0)
        return SegmentResult(image.with_array(probability), confidence.astype(np.float32),
                             time.perf_counter() - start, 0, len(confidence), str(self.device))


def student_from_checkpoint(state: Any, path: str | Path) -> StudentUNet:
    """The model a training checkpoint's direct use runs: a stage-2 objective's EMA teacher
    (its `student_config` is stored), or the supervised method's student, whose network is the
    same MONAI UNet, rebuilt from the spec stored with it."""
    config = state.config
    if "student_config" in state.objective and "teacher" in state.objective:
        student_config, weights = StudentConfig.from_dict(state.objective["student_config"]), state.objective["teacher"]
    elif config.get("method") == "supervised" and "student" in state.models:
        from vessa.train.methods.supervised import DEFAULT_OPTIONS

        options = {**DEFAULT_OPTIONS, **config.get("options", {})}
        student_config = StudentConfig(class_names=["background", *config["structures"]], channels=options["channels"],
                                       strides=[2] * (len(options["channels"]) - 1), res_units=options["res_units"],
                                       image_size=config["image_size"])
        weights = state.models["student"]
    else:
        raise CheckpointError(f"{path}: not a student checkpoint of stage 2 (method {config.get('method', '?')!r})")
    student = StudentUNet(student_config)
    try:
        student.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the student config "
                              f"({str(error).strip().splitlines()[0]})") from None
    return student


def load_direct(checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 16) -> DirectSegmenter:
    """A DirectSegmenter from a stage-2 training checkpoint (`student_from_checkpoint`)."""
    from vessa.train.checkpoint import load_checkpoint

    return DirectSegmenter(student_from_checkpoint(load_checkpoint(checkpoint), checkpoint), device, batch_size)
