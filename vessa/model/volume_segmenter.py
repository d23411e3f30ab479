"""VolumeSegmenter: a probability volume on the target's exact grid from templates + text.

One call (`segment`) does, for a target volume and up to `max_templates` templates:
1. checks the input (finite image, non-empty text, templates with non-empty masks on their
   image grids) before any model work;
2. cuts the target into 2D slices along its slicing axis and each template, brought to the
   target's axis order, along the same axis (`slicing`); intensities by `intensity`;
3. encodes each needed template slice once (batched) into sam2 memory, embeds the text once;
   encoder features of target and template slices are kept across calls (`feature_cache`:
   re-runs, several structures of one volume, one template image with several masks);
4. encodes target slices in batches and decodes them with their own template slices
   (chosen by relative position, at most `template_slice_limit` distinct ones per template)
   and, when the model uses a location prior, the mean of the templates' masks at each target
   slice's relative position; with `propagate=True` slices are decoded one after the other and
   a slice where the structure was found adds its prediction's memory to the next slice's
   (sam2's previous-frame memory), the encoder still running batched; with `slice_step=k > 1`
   only every k-th slice (and the last) is decoded first, then the slices between two of
   those only where either shows the structure (a voxel with probability >= SPARSE_PRESENCE;
   the rest are empty: structures spanning fewer than k slices can be missed);
5. maps the best mask's logits back to each slice's grid; probability = sigmoid(logit),
   set to 0 on slices whose object score says the structure is absent.
Mixed precision by `device.autocast` (default "auto": bf16 on CUDA and on CPUs with bf16
instructions); channels-last weights and inputs; always `torch.inference_mode`. A CUDA out-of-memory
error halves the batch size and retries; at batch size 1 the call restarts on the CPU (logged,
`device.with_cpu_fallback`).
Both hold for that call only: the next call starts on the configured device and batch size
again (`SegmentResult.device` says where a result was computed).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vessa.errors import BankError, InputError
from vessa.io import Template, Volume
from vessa.model.assistant import AssistantOutput, TemplateAssistant, TemplateMemory
from vessa.model.device import autocast, check_precision, is_out_of_memory, resolve_device, with_cpu_fallback
from vessa.model.feature_cache import FeatureCache, volume_key
from vessa.model.intensity import intensity_range, normalize_for_sam, to_unit_range
from vessa.model.sam2_adapter import ImageFeatures
from vessa.model.slicing import (
    SquareFrame,
    array_spacing,
    orient_like,
    relative_slices,
    slicing_axis,
    template_slices,
)

log = logging.getLogger(__name__)
# voxel types that go to the device as they are (others are converted to float32 first)
_TORCH_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16,
                                            np.int32, np.int64))

Progress = Callable[[float], None]
# distinct slices encoded per template by default: neighbouring slices of one template differ
# little, and encoding them is a large share of a call (benchmarks/RESULTS.md)
TEMPLATE_SLICE_LIMIT = 16
# sparse pass: a decoded slice "shows the structure" when some voxel's probability reaches this,
# well below the usual 0.5 threshold and above the ~0.02 (sigmoid(-4)) that the location prior
# leaves outside the structure
SPARSE_PRESENCE = 0.1


@dataclass
class SegmentResult:
    """probability: float32 Volume on the input's grid; slice_confidence (n,): predicted IoU
    x object probability per slice along `axis` (array axis: 0 = k, 1 = j, 2 = i), 0 on the
    slices a sparse pass skipped; slices_decoded: how many slices went through the model;
    device: where they did ("cpu" after an out-of-memory fallback from the GPU); warnings: what
    the model says about this result."""

    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    axis: int
    slices_decoded: int
    device: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Call:
    """Where one `segment` call runs: its device and batch size (halved on out-of-memory, for
    this call only)."""

    device: torch.device
    batch_size: int


class VolumeSlices:
    """One volume (k, j, i) cut along the slicing axis: `raw` [n, rows, cols] (a view), its frame
    for S x S model slices, its intensity window (computed on first use, so slices served from
    the feature cache cost no intensity pass) and `key`, its slices' key in the feature cache."""

    def __init__(self, array: np.ndarray, spacing: np.ndarray, axis: int, size: int, modality: str,
                 ct_window: str, key: tuple | None):
        self.raw = np.moveaxis(array, axis, 0)
        row_spacing, col_spacing = (spacing[a] for a in range(3) if a != axis)
        self.frame = SquareFrame.for_slices(self.raw.shape[1], self.raw.shape[2], row_spacing, col_spacing, size)
        self.key = key
        self._array, self._modality, self._ct_window = array, modality, ct_window

    def __len__(self) -> int:
        return self.raw.shape[0]

    @functools.cached_property
    def window(self) -> tuple[float, float]:
        """(low, high) grey values mapped to 0 and 1 (`intensity.intensity_range` of the volume)."""
        return intensity_range(self._array, self._modality, self._ct_window)

    def square(self, rows: slice | np.ndarray, device: torch.device) -> torch.Tensor:
        """Model-sized slices [m, 1, S, S] in [0, 1] of the selected rows, on `device`: the raw
        voxels go there first (an int16 CT moves half the bytes), the windowing and resizing run there."""
        raw = np.ascontiguousarray(self.raw[rows])
        if raw.dtype not in _TORCH_DTYPES:
            raw = raw.astype(np.float32)
        unit = to_unit_range(torch.from_numpy(raw).to(device), *self.window)
        return self.frame.to_square(unit[:, None])


@dataclass
class TemplatePlan:
    """A template cut like the target: `used`, its slices (holding the structure) that some
    target slice needs, their masks [len(used), 1, S, S], `chosen`, per target slice the index
    of its slice in `used`, and the template's location prior."""

    slices: VolumeSlices
    used: np.ndarray
    masks: torch.Tensor
    chosen: np.ndarray
    prior: _LocationPrior


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


class VolumeSegmenter:
    """Segments one structure in a volume (see the module docstring).

    device, batch_size: where each call starts, and target/template slices per encoder call
        (on CUDA OOM a call halves its batch, then moves to the CPU; the next call starts here again);
        default 8 on CPU, 16 on CUDA (timings: benchmarks/RESULTS.md).
    propagate: add the previous slice's prediction as memory (sequential decoding).
    ct_window: CT window preset name (`intensity.CT_WINDOWS`).
    cache_mib: memory for encoder features kept across calls (`feature_cache`; 0 = none).
    precision: `config.PRECISIONS` ("auto": bf16 on CUDA and on CPUs with bf16 instructions).
    slice_step: decode every k-th slice first and the rest only next to the structure (module
        docstring, step 4; 1 = every slice; not with `propagate`).
    template_slice_limit: distinct slices encoded per template at most (None = every slice of
        the structure a target slice maps to).
    """

    def __init__(
        self,
        assistant: TemplateAssistant,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        propagate: bool = False,
        ct_window: str = "soft_tissue",
        cache_mib: float = 1024,
        precision: str = "auto",
        slice_step: int = 1,
        template_slice_limit: int | None = TEMPLATE_SLICE_LIMIT,
    ):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if cache_mib < 0:
            raise ValueError(f"cache_mib={cache_mib}: must be >= 0")
        check_precision(precision)
        if slice_step < 1 or (slice_step > 1 and propagate):
            raise ValueError(f"slice_step={slice_step}: must be >= 1, and 1 with propagate (slices in order)")
        if template_slice_limit is not None and template_slice_limit < 1:
            raise ValueError(f"template_slice_limit={template_slice_limit}: must be >= 1 (or None: no limit)")
        self.cache = FeatureCache(int(cache_mib * 2**20))
        self.assistant = assistant.eval()
        self.propagate = propagate
        self.ct_window = ct_window
        self.precision = precision
        self.slice_step = slice_step
        self.template_slice_limit = template_slice_limit
        self.device = resolve_device(device)
        self._place(self.device)
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 8)

    def _place(self, device: torch.device) -> None:
        """Move the model to `device`; the cached features (on the old device) are dropped."""
        self.cache.clear()
        self.assistant.to(device).to(memory_format=torch.channels_last)

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
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"text prompt {text!r}: must be a non-empty string (the structure's name or a "
                             "description)")
        templates = check_templates(image, templates, self.assistant.config.max_templates)
        hits, misses = self.cache.hits, self.cache.misses
        calls = []

        def run(device: str) -> tuple[np.ndarray, np.ndarray, int, int]:
            calls.append(_Call(torch.device(device), self.batch_size))
            moved = calls[-1].device != self.device
            if moved:
                self._place(calls[-1].device)
            try:
                return self._run(image, templates, text, progress, modality, calls[-1])
            finally:
                if moved:
                    self._place(self.device)

        def warn() -> None:
            log.warning("GPU out of memory (at batch size 1): this run continues on the CPU (slower); "
                        "the next one starts on %s again", self.device)

        probability, confidence, axis, decoded = with_cpu_fallback(run, str(self.device), warn)
        call = calls[-1]
        if progress:
            progress(1.0)
        log.debug("feature cache: %d slices reused, %d encoded, %.0f MiB held; %d of %d slices decoded",
                  self.cache.hits - hits, self.cache.misses - misses, self.cache.bytes / 2**20, decoded,
                  len(confidence))
        return SegmentResult(image.with_array(probability), confidence, time.perf_counter() - start, axis, decoded,
                             str(call.device))

    def _run(
        self, image: Volume, templates: list[Template], text: str, progress: Progress | None, modality: str,
        call: _Call,
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        size, keyed = self.assistant.image_size, self.cache.max_bytes > 0
        axis = slicing_axis(image.shape, image.spacing)
        spacing = array_spacing(image.spacing)
        key = volume_key(image.array, tuple(spacing), axis, size, modality, self.ct_window) if keyed else None
        target = VolumeSlices(image.array, spacing, axis, size, modality, self.ct_window, key)
        count = len(target)
        plans = [template_plan(t, image, axis, size, count, self.ct_window, keyed, self.template_slice_limit)
                 for t in templates]
        offsets = np.cumsum([0] + [len(plan.used) for plan in plans[:-1]])
        # [n, K]: per target slice, its slice of each template among all templates' encoded slices
        index = torch.from_numpy(np.stack([plan.chosen + o for plan, o in zip(plans, offsets, strict=True)], axis=1))
        priors = [plan.prior for plan in plans] if self.assistant.prior_gate is not None else []
        total, done = sum(len(plan.used) for plan in plans) + count, 0

        def report(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(min(done / total, 0.999))

        with torch.inference_mode(), autocast(call.device, self.precision):
            text_embedding = self.assistant.embed_text([text])
            parts: list[TemplateMemory] = []
            for plan in plans:
                self._batched(np.arange(len(plan.used)),
                              lambda rows, plan=plan: parts.append(self._encode_templates(plan, rows, call.device)),
                              report, call)
            memory = TemplateMemory.cat(parts)
            probability, confidence, decoded = self._decode_targets(target, memory, index, text_embedding, priors,
                                                                    report, call)
        return np.ascontiguousarray(np.moveaxis(probability, 0, axis)), confidence, axis, decoded

    def _decode_targets(
        self,
        target: VolumeSlices,
        memory: TemplateMemory,
        index: torch.Tensor,
        text_embedding: torch.Tensor,
        priors: list[_LocationPrior],
        report: Callable[[int], None],
        call: _Call,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Probabilities [n, rows, cols] and confidences [n] of all target slices and how many
        slices were decoded (`priors`: one per template when the model uses a location prior,
        else empty)."""
        count, frame = len(target), target.frame
        probability = np.zeros((count, frame.rows, frame.cols), dtype=np.float32)
        confidence = np.zeros(count, dtype=np.float32)
        found = np.zeros(count, dtype=bool)  # some voxel at SPARSE_PRESENCE or more
        previous: dict[str, tuple | None] = {"memory": None}

        def step(rows: np.ndarray) -> None:
            features = self._features(target, rows, call.device)
            prior = torch.stack([p.square(rows) for p in priors]).mean(0).to(call.device) if priors else None
            if self.propagate:
                logits, objects, scores, previous["memory"] = self._propagate(
                    features, memory, index[rows].to(call.device), text_embedding, previous["memory"], prior
                )
            else:
                logits, objects, scores = _summary(
                    self._decode(features, memory, index[rows].to(call.device), text_embedding, None, prior)
                )
            present = (objects > 0).float().view(-1, 1, 1, 1)
            probability[rows] = (torch.sigmoid(frame.from_square(logits)) * present).squeeze(1).cpu().numpy()
            confidence[rows] = scores.cpu().numpy()
            found[rows] = probability[rows].max(axis=(1, 2)) >= SPARSE_PRESENCE

        if self.slice_step == 1:
            self._batched(np.arange(count), step, report, call)
            return probability, confidence, count
        coarse = np.unique(np.append(np.arange(0, count, self.slice_step), count - 1))
        self._batched(coarse, step, report, call)
        rest = _gaps_beside(coarse, found[coarse])
        self._batched(rest, step, report, call)
        report(count - len(coarse) - len(rest))
        return probability, confidence, len(coarse) + len(rest)

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
        return normalize_for_sam(unit).contiguous(memory_format=torch.channels_last)

    def _features(self, slices: VolumeSlices, rows: np.ndarray, device: torch.device) -> ImageFeatures:
        """Encoder features of the given rows of `slices` on `device`, through the feature cache."""
        return self.cache.features(slices.key, rows, lambda missing: self.assistant.encode(
            self._prepare(slices.square(missing, device))))

    def _encode_templates(self, plan: TemplatePlan, rows: np.ndarray, device: torch.device) -> TemplateMemory:
        features = self._features(plan.slices, plan.used[rows], device)
        return self.assistant.encode_templates(features, plan.masks[rows].to(device))

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
            memory.gather(index),
            text_embedding.expand(len(features), -1),
            extra_memory=extra_memory,
            location_prior=prior,
        )

    def _batched(self, rows: np.ndarray, step: Callable[[np.ndarray], None], report: Callable[[int], None],
                 call: _Call) -> None:
        """Run `step` on consecutive batches of `rows` (slice indices); on CUDA OOM halve the call's batch."""
        start, count = 0, len(rows)
        while start < count:
            size = min(call.batch_size, count - start)
            try:
                step(rows[start : start + size])
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if call.device.type == "cuda":
                    self.cache.clear()
                    torch.cuda.empty_cache()
                if size == 1:
                    raise  # on the GPU: `with_cpu_fallback` runs the call again on the CPU
                call.batch_size = max(1, size // 2)
                log.warning("out of memory at batch size %d: retrying with batch size %d", size, call.batch_size)
                continue
            start += size
            report(size)


def _gaps_beside(coarse: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The slices strictly between consecutive `coarse` slices where either of the two has `found`."""
    gaps = [np.arange(a + 1, b) for a, b, near in zip(coarse[:-1], coarse[1:], found[:-1] | found[1:], strict=True)
            if near]
    return np.concatenate(gaps) if gaps else np.zeros(0, dtype=np.int64)


def _summary(out: AssistantOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best-mask logits [B, 1, S, S], object-score logits [B, 1], confidence [B]."""
    return out.best_logits(), out.object_score_logits, out.confidence()


def check_templates(image: Volume, templates: list[Template], max_templates: int) -> list[Template]:
    """Validate the image and the templates before any model work; the templates to use."""
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


def template_plan(
    template: Template, image: Volume, axis: int, size: int, count: int, ct_window: str, keyed: bool,
    limit: int | None = None,
) -> TemplatePlan:
    """Which slices of `template` (cut like `image`) the `count` target slices need (at most
    `limit` distinct ones), and its location prior; `keyed`: give its slices a feature-cache key."""
    direction = template.image.direction
    oriented, order = orient_like(template.image.array, direction, image.direction)
    mask, _ = orient_like(np.asarray(template.mask), direction, image.direction)
    spacing = array_spacing(template.image.spacing)[list(order)]
    key = None
    if keyed:
        key = volume_key(template.image.array, tuple(template.image.spacing), _rounded(direction),
                         _rounded(image.direction), axis, size, template.modality, ct_window)
    cut = VolumeSlices(oriented, spacing, axis, size, template.modality, ct_window, key)
    stack_mask = np.moveaxis(mask, axis, 0)
    present = np.flatnonzero(stack_mask.any(axis=(1, 2)))
    chosen = template_slices(count, present, stack_mask.shape[0], limit)
    used = np.unique(chosen)
    masks = cut.frame.to_square(torch.from_numpy(stack_mask[used].astype(np.float32))[:, None]).clamp(0, 1)
    prior = _LocationPrior(stack_mask, cut.frame, relative_slices(count, stack_mask.shape[0]))
    return TemplatePlan(cut, used, masks, np.searchsorted(used, chosen), prior)


def _rounded(direction: np.ndarray) -> bytes:
    return np.round(np.asarray(direction, dtype=np.float64), 6).tobytes()
