"""VolumeSegmenter: a probability volume on the target's exact grid from templates + text.

One call (`segment`) does, for a target volume and up to `max_templates` templates:
1. checks the input (finite image, non-empty text, templates with non-empty masks on their
   image grids) before any model work;
2. cuts the target into 2D slices along its slicing axis and each template, brought to the
   target's axis order, along the same axis (`slicing`); intensities by `intensity`;
3. encodes each needed template slice once (batched) into sam2 memory, embeds the text once;
4. encodes target slices in batches and decodes them with their own template slices
   (chosen by relative position) and, when the model uses a location prior, the mean of the
   templates' masks at each target slice's relative position; with `propagate=True` slices
   are decoded one after the other and a slice where the structure was found adds its
   prediction's memory to the next slice's (sam2's previous-frame memory), the encoder
   still running batched;
5. maps the best mask's logits back to each slice's grid; probability = sigmoid(logit),
   set to 0 on slices whose object score says the structure is absent.
On CUDA: bf16 autocast (fp16 where bf16 is missing), channels-last; always
`torch.inference_mode`. A CUDA out-of-memory error halves the batch size and retries; at
batch size 1 the model moves to the CPU (logged) and the call restarts there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vessa.errors import BankError, InputError
from vessa.io import Template, Volume
from vessa.model.assistant import AssistantOutput, TemplateAssistant, TemplateMemory
from vessa.model.device import autocast, is_out_of_memory, resolve_device
from vessa.model.encoder import ImageFeatures
from vessa.model.intensity import intensity_range, normalize_for_sam, to_unit_range
from vessa.model.slicing import (
    SquareFrame,
    array_spacing,
    orient_like,
    relative_slices,
    slicing_axis,
    template_slices,
)

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


@dataclass
class SegmentResult:
    """probability: float32 Volume on the input's grid; slice_confidence (n,): predicted IoU
    x object probability per slice along `axis` (array axis: 0 = k, 1 = j, 2 = i)."""

    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    axis: int


@dataclass
class _Slices:
    """One volume cut along the slicing axis: unit-range stack [n, rows, cols] and its frame."""

    stack: np.ndarray
    frame: SquareFrame

    def square(self, rows: slice | np.ndarray) -> torch.Tensor:
        """Model-sized slices [m, 1, S, S] of the selected rows of the stack."""
        return self.frame.to_square(torch.from_numpy(np.ascontiguousarray(self.stack[rows]))[:, None])


@dataclass
class _LocationPrior:
    """A template's masks cut like the target ([m, rows, cols]) and, per target slice, the
    index of the mask slice at the same relative position."""

    stack: np.ndarray
    frame: SquareFrame
    picks: np.ndarray

    def square(self, rows: slice) -> torch.Tensor:
        """Model-sized prior slices [r, 1, S, S] in [0, 1] for the selected target slices."""
        planes = torch.from_numpy(self.stack[self.picks[rows]].astype(np.float32))[:, None]
        return self.frame.to_square(planes).clamp(0, 1)


class _FallBackToCpu(Exception):
    """Raised inside a run when CUDA is out of memory even at batch size 1."""


class VolumeSegmenter:
    """Segments one structure in a volume (see the module docstring).

    batch_size: target/template slices per encoder call (halved automatically on CUDA OOM).
    propagate: add the previous slice's prediction as memory (sequential decoding).
    ct_window: CT window preset name (`intensity.CT_WINDOWS`).
    """

    def __init__(
        self,
        assistant: TemplateAssistant,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        propagate: bool = False,
        ct_window: str = "soft_tissue",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        self.assistant = assistant.eval()
        self.batch_size = batch_size
        self.propagate = propagate
        self.ct_window = ct_window
        self.device = torch.device("cpu")
        self._move_to(resolve_device(device))

    def _move_to(self, device: torch.device) -> None:
        self.device = device
        self.assistant.to(device)
        if device.type == "cuda":
            self.assistant.to(memory_format=torch.channels_last)

    def segment(
        self,
        image: Volume,
        templates: list[Template],
        text: str,
        progress: Progress | None = None,
        modality: str = "",
    ) -> SegmentResult:
        """Probability volume of the structure named/described by `text` in `image`.

        templates: exemplars of the same structure (the first `max_templates` are used);
        modality: "CT", "MR", ... of `image` if known (otherwise CT is detected by values).
        """
        start = time.perf_counter()
        templates = _check_input(image, templates, text, self.assistant.config.max_templates)
        try:
            probability, confidence, axis = self._run(image, templates, text, progress, modality)
        except _FallBackToCpu:
            log.warning("GPU out of memory even at batch size 1: continuing on the CPU (slower)")
            self._move_to(torch.device("cpu"))
            probability, confidence, axis = self._run(image, templates, text, progress, modality)
        if progress:
            progress(1.0)
        return SegmentResult(image.with_array(probability), confidence, time.perf_counter() - start, axis)

    def _run(
        self, image: Volume, templates: list[Template], text: str, progress: Progress | None, modality: str
    ) -> tuple[np.ndarray, np.ndarray, int]:
        size = self.assistant.image_size
        axis = slicing_axis(image.shape, image.spacing)
        target = _cut(image.array, array_spacing(image.spacing), axis, size, modality, self.ct_window)
        count = target.stack.shape[0]
        units, masks, index, priors = [], [], [], []
        for template in templates:
            unit, mask, chosen, prior = _template_slices(template, image, axis, size, count, self.ct_window)
            index.append(chosen + sum(len(u) for u in units))
            units.append(unit)
            masks.append(mask)
            priors.append(prior)
        if self.assistant.prior_gate is None:
            priors = []
        index = torch.from_numpy(np.stack(index, axis=1))  # [n, K] into the concatenated template slices
        units, masks = torch.cat(units), torch.cat(masks)
        total, done = len(units) + count, 0

        def report(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(min(done / total, 0.999))

        with torch.inference_mode(), autocast(self.device):
            text_embedding = self.assistant.embed_text([text])
            parts: list[TemplateMemory] = []
            self._batched(
                len(units), lambda rows: parts.append(self._encode_templates(units[rows], masks[rows])), report
            )
            memory = TemplateMemory(
                torch.cat([p.embedding for p in parts]),
                torch.cat([p.masks for p in parts]),
                torch.cat([p.memory for p in parts]),
                parts[0].memory_pos,
            )
            probability, confidence = self._decode_targets(target, memory, index, text_embedding, priors, report)
        return np.ascontiguousarray(np.moveaxis(probability, 0, axis)), confidence, axis

    def _decode_targets(
        self,
        target: _Slices,
        memory: TemplateMemory,
        index: torch.Tensor,
        text_embedding: torch.Tensor,
        priors: list[_LocationPrior],
        report: Callable[[int], None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [n, rows, cols] and confidences [n] of all target slices (`priors`:
        one per template when the model uses a location prior, else empty)."""
        count, frame = target.stack.shape[0], target.frame
        probability = np.zeros((count, frame.rows, frame.cols), dtype=np.float32)
        confidence = np.zeros(count, dtype=np.float32)
        previous: dict[str, tuple | None] = {"memory": None}

        def step(rows: slice) -> None:
            features = self.assistant.encode(self._prepare(target.square(rows)))
            prior = torch.stack([p.square(rows) for p in priors]).mean(0).to(self.device) if priors else None
            if self.propagate:
                logits, objects, scores, previous["memory"] = self._propagate(
                    features, memory, index[rows], text_embedding, previous["memory"], prior
                )
            else:
                logits, objects, scores = _summary(
                    self._decode(features, memory, index[rows], text_embedding, None, prior)
                )
            present = (objects > 0).float().view(-1, 1, 1, 1)
            probability[rows] = (torch.sigmoid(frame.from_square(logits)) * present).squeeze(1).cpu().numpy()
            confidence[rows] = scores.cpu().numpy()

        self._batched(count, step, report)
        return probability, confidence

    def _propagate(
        self,
        features: ImageFeatures,
        memory: TemplateMemory,
        index: torch.Tensor,
        text_embedding: torch.Tensor,
        previous: tuple[torch.Tensor, torch.Tensor] | None,
        prior: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Decode slices in order, each with the previous slice's prediction as extra memory
        (only when the structure was found there); also returns the last slice's memory."""
        summaries = []
        for row in range(len(features)):
            one = features[row : row + 1]
            one_prior = None if prior is None else prior[row : row + 1]
            out = self._decode(one, memory, index[row : row + 1], text_embedding, previous, one_prior)
            previous = self.assistant.prediction_memory(one, out) if out.object_score_logits.item() > 0 else None
            summaries.append(_summary(out))
        logits, objects, scores = (torch.cat(parts) for parts in zip(*summaries, strict=True))
        return logits, objects, scores, previous

    def _prepare(self, unit: torch.Tensor) -> torch.Tensor:
        images = normalize_for_sam(unit.to(self.device))
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _encode_templates(self, unit: torch.Tensor, masks: torch.Tensor) -> TemplateMemory:
        features = self.assistant.encode(self._prepare(unit))
        return self.assistant.encode_templates(features, masks.to(self.device))

    def _decode(
        self,
        features: ImageFeatures,
        memory: TemplateMemory,
        index: torch.Tensor,
        text_embedding: torch.Tensor,
        extra_memory: tuple[torch.Tensor, torch.Tensor] | None,
        prior: torch.Tensor | None,
    ) -> AssistantOutput:
        return self.assistant.decode(
            features,
            memory.gather(index.to(self.device)),
            text_embedding.expand(len(features), -1),
            extra_memory=extra_memory,
            location_prior=prior,
        )

    def _batched(self, count: int, step: Callable[[slice], None], report: Callable[[int], None]) -> None:
        """Run `step` on consecutive slices of range(count); on CUDA OOM halve the batch."""
        start = 0
        while start < count:
            size = min(self.batch_size, count - start)
            try:
                step(slice(start, start + size))
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if size == 1:
                    if self.device.type == "cpu":
                        raise
                    raise _FallBackToCpu() from error
                self.batch_size = max(1, size // 2)
                log.warning("out of memory at batch size %d: retrying with batch size %d", size, self.batch_size)
                continue
            start += size
            report(size)


def _summary(out: AssistantOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best-mask logits [B, 1, S, S], object-score logits [B, 1], confidence [B]."""
    return out.best_logits(), out.object_score_logits, out.confidence()


def _check_input(image: Volume, templates: list[Template], text: str, max_templates: int) -> list[Template]:
    """Validate everything before any model work; the templates to use."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"text prompt {text!r}: must be a non-empty string (the structure's name or a description)")
    image.require_finite("the image")
    if not templates:
        raise BankError("no templates: give at least one image with a mask of the structure")
    for number, template in enumerate(templates, start=1):
        label = f"template {number} ({template.case_id or '?'}/{template.name})"
        mask = np.asarray(template.mask)
        if mask.shape != template.image.shape:
            raise BankError(f"{label}: mask shape {mask.shape} does not match its image {template.image.shape}")
        if not mask.any():
            raise BankError(f"{label}: the mask is empty")
        template.image.require_finite(f"{label} image")
    if len(templates) > max_templates:
        log.info("using the first %d of %d templates", max_templates, len(templates))
    return list(templates[:max_templates])


def _cut(array: np.ndarray, spacing: np.ndarray, axis: int, size: int, modality: str, ct_window: str) -> _Slices:
    """`array` (k, j, i) in unit range, cut along `axis`, with its frame for S x S slices."""
    low, high = intensity_range(array, modality, ct_window)
    stack = np.moveaxis(to_unit_range(array, low, high), axis, 0)
    row_spacing, col_spacing = (spacing[a] for a in range(3) if a != axis)
    return _Slices(stack, SquareFrame.for_slices(stack.shape[1], stack.shape[2], row_spacing, col_spacing, size))


def _template_slices(
    template: Template, image: Volume, axis: int, size: int, count: int, ct_window: str
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, _LocationPrior]:
    """The template slices that contain the structure ([m, 1, S, S] images and masks), for
    each of the `count` target slices the index of its template slice among them, and the
    template's location prior."""
    direction = template.image.direction
    oriented, order = orient_like(template.image.array, direction, image.direction)
    mask, _ = orient_like(np.asarray(template.mask), direction, image.direction)
    spacing = array_spacing(template.image.spacing)[list(order)]
    cut = _cut(oriented, spacing, axis, size, template.modality, ct_window)
    stack_mask = np.moveaxis(mask, axis, 0)
    present = np.flatnonzero(stack_mask.any(axis=(1, 2)))
    chosen = template_slices(count, present, stack_mask.shape[0])
    used = np.unique(chosen)
    masks = cut.frame.to_square(torch.from_numpy(stack_mask[used].astype(np.float32))[:, None])
    prior = _LocationPrior(stack_mask, cut.frame, relative_slices(count, stack_mask.shape[0]))
    return cut.square(used), masks.clamp(0, 1), np.searchsorted(used, chosen), prior
