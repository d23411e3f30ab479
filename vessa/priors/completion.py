"""Few-slice completion: a structure drawn on a few slices of a volume, filled in on the rest.

Pipeline (`SliceCompleter.complete`):
1. find the drawn slices and their axis (`drawn_slices`);
2. shape prior: the drawn masks' signed distances d (mm) carried along the anatomy to the
   other slices, interpolated between drawn slices and closed beyond them (`slice_prior`);
3. appearance: a per-case classifier fitted on the drawn slices (`appearance`), used in a band
   around the prior with a weight that grows with its measured separability;
4. SAM (`sam_refine`, when the completer has a model): if SAM reproduces the drawn slices from
   their boxes (fidelity), each other slice is outlined by SAM prompted by the box of the
   estimate of steps 2-3 there;
5. fusion: logit = d / prior_scale_mm + w_a(separability) x appearance logit
   + w_s(fidelity) x SAM logit, where w(s) = weight x clip((s - threshold) / (1 - threshold), 0, 1)
   for each part; probability = sigmoid(logit). Whatever was drawn stays as drawn: drawn
   slices keep their masks exactly, and voxels drawn elsewhere stay in.
The fusion constants are fitted on structures of the training atlases
(`benchmarks/bench_completion.py --fit`) and stored in `FusionConfig`'s defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vessa.errors import InputError
from vessa.io import Volume
from vessa.model.feature_cache import volume_key
from vessa.model.intensity import intensity_range, to_unit_range
from vessa.model.slicing import array_spacing
from vessa.priors.appearance import AppearanceModel, fit_appearance, image_features
from vessa.priors.drawn_slices import DrawnSlices, find_drawn_slices
from vessa.priors.sam_refine import SliceSam, crop_box, fidelity
from vessa.priors.slice_prior import ABSENT, SlicePriorConfig, slice_prior

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Gate:
    """A part's weight as a function of how well it did on the drawn slices (score in [0, 1]):
    weight x clip((score - threshold) / (1 - threshold), 0, 1)."""

    weight: float
    threshold: float

    def __post_init__(self) -> None:
        if self.weight < 0 or not 0 <= self.threshold < 1:
            raise ValueError(f"gate weight={self.weight}, threshold={self.threshold}: need weight >= 0, "
                             "0 <= threshold < 1")

    def __call__(self, score: float) -> float:
        return self.weight * float(np.clip((score - self.threshold) / (1.0 - self.threshold), 0.0, 1.0))


@dataclass(frozen=True)
class FusionConfig:
    """How the parts are combined (module docstring, step 5)."""

    prior_scale_mm: float = 2.0
    appearance: Gate = Gate(2.0, 0.7)
    sam: Gate = Gate(1.0, 0.8)

    def __post_init__(self) -> None:
        if self.prior_scale_mm <= 0:
            raise ValueError(f"prior_scale_mm={self.prior_scale_mm}: must be > 0")


@dataclass(frozen=True)
class CompletionConfig:
    """The parts of few-slice completion; `appearance` / `sam` False leave that part out."""

    prior: SlicePriorConfig = field(default_factory=SlicePriorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    appearance: bool = True
    sam: bool = True
    sam_margin: float = 0.5  # the SAM crop extends the estimate's box by this fraction per side


@dataclass
class CompletionParts:
    """Every part's output on the slice stack cut along the drawn axis [n, rows, cols]:
    distance (mm, the prior), appearance (log-odds, 0 outside its band) and sam (log-odds on the
    slices SAM outlined, else None), with the scores their weights come from."""

    drawn: DrawnSlices
    distance: np.ndarray
    appearance: np.ndarray | None
    separability: float
    sam: np.ndarray | None
    fidelity: float

    def logits(self, fusion: FusionConfig) -> np.ndarray:
        """The fused log-odds (module docstring, step 5)."""
        logits = self.distance / fusion.prior_scale_mm
        if self.appearance is not None and fusion.appearance(self.separability) > 0:
            logits = logits + fusion.appearance(self.separability) * self.appearance
        if self.sam is not None and fusion.sam(self.fidelity) > 0:
            logits = logits + fusion.sam(self.fidelity) * self.sam
        return logits

    def reach(self) -> tuple[slice, slice, slice]:
        """The bounding box [n, rows, cols] of where the prior reaches (the rest is 0 in every fusion)."""
        present = self.distance > ABSENT
        return tuple(_span(present.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3))

    def cropped(self, box: tuple[slice, slice, slice]) -> CompletionParts:
        """These parts on a box of the slice stack (the drawn slices inside it, cropped)."""
        inside = (self.drawn.indices >= box[0].start) & (self.drawn.indices < box[0].stop)
        drawn = DrawnSlices(self.drawn.axis, self.drawn.indices[inside] - box[0].start,
                            self.drawn.masks[inside][:, box[1], box[2]], self.drawn.other_voxels)
        return CompletionParts(drawn, self.distance[box], None if self.appearance is None else self.appearance[box],
                               self.separability, None if self.sam is None else self.sam[box], self.fidelity)

    def probability(self, fusion: FusionConfig) -> np.ndarray:
        """sigmoid(logits), 0 where the prior does not reach, drawn slices as drawn [n, rows, cols]."""
        probability = (1.0 / (1.0 + np.exp(-np.clip(self.logits(fusion), -30, 30)))).astype(np.float32)
        probability[self.distance <= ABSENT] = 0.0
        probability[self.drawn.indices] = self.drawn.masks
        return probability


@dataclass
class CompletionResult:
    """probability: float32 (k, j, i) on the image grid (drawn slices exactly as drawn);
    drawn: the drawn slices found (their `axis` is the slice axis); slice_uncertainty: per slice
    along that axis, the summed min(p, 1 - p) (0 on drawn slices); next_slice: the undrawn slice
    with the most uncertainty (the one to check and correct first), or None; separability,
    fidelity: how well the appearance and SAM reproduced the drawn slices, and the weights they
    got; encoded: slices the SAM encoder ran on in this call (the rest came from its cache);
    warnings: what the user should know (one sentence each)."""

    probability: np.ndarray
    drawn: DrawnSlices
    slice_uncertainty: np.ndarray
    next_slice: int | None
    separability: float
    appearance_weight: float
    fidelity: float
    sam_weight: float
    encoded: int
    seconds: float
    warnings: list[str]


class SliceCompleter:
    """Few-slice completion (module docstring). sam: a `SliceSam` (None: no SAM step)."""

    def __init__(self, sam: SliceSam | None = None, config: CompletionConfig = CompletionConfig()):
        self.sam = sam
        self.config = config

    def complete(self, image: Volume, mask: np.ndarray, modality: str = "", axis: int | None = None,
                 progress: Progress | None = None) -> CompletionResult:
        """Fill in the structure drawn on a few slices of `mask` (k, j, i) over `image`."""
        start = time.perf_counter()
        encoded_before = self.sam.encoded if self.sam else 0
        mask = np.asarray(mask, bool)
        parts = self.parts(image, mask, modality, axis, progress)
        fusion, drawn = self.config.fusion, parts.drawn
        probability = parts.probability(fusion)
        uncertainty = np.minimum(probability, 1 - probability).sum(axis=(1, 2))
        uncertainty[drawn.indices] = 0
        next_slice = int(uncertainty.argmax()) if uncertainty.max() > 0 else None
        warnings = _drawn_warnings(drawn)
        if not (probability >= 0.5).sum() > drawn.masks.sum():
            warnings.append("the completion adds nothing beyond the drawn slices")
        probability = np.ascontiguousarray(np.moveaxis(probability, 0, drawn.axis))
        probability[mask] = 1.0  # whatever was drawn stays drawn
        _report(progress, 1.0)
        return CompletionResult(
            probability, drawn, uncertainty.astype(np.float32), next_slice, parts.separability,
            fusion.appearance(parts.separability) if parts.appearance is not None else 0.0, parts.fidelity,
            fusion.sam(parts.fidelity) if parts.sam is not None else 0.0,
            (self.sam.encoded - encoded_before) if self.sam else 0, time.perf_counter() - start, warnings,
        )

    def parts(self, image: Volume, mask: np.ndarray, modality: str = "", axis: int | None = None,
              progress: Progress | None = None) -> CompletionParts:
        """Steps 1-4 of the module docstring (the fusion constants are not used here, only
        whether a part is on: `config.appearance`, `config.sam`)."""
        if mask.shape != image.shape:
            raise InputError(f"the drawn segment's grid {mask.shape} differs from the image's {image.shape}")
        image.require_finite("the image")
        drawn = find_drawn_slices(mask, axis)
        spacing = array_spacing(image.spacing)
        spacing = (float(spacing[drawn.axis]), *(float(spacing[a]) for a in range(3) if a != drawn.axis))
        window = intensity_range(image.array, modality)
        unit = np.moveaxis(to_unit_range(image.array, *window), drawn.axis, 0)
        _report(progress, 0.05)
        distance = slice_prior(unit, drawn, spacing, self.config.prior)
        _report(progress, 0.5)
        appearance, separability = None, 0.0
        if self.config.appearance:
            model = fit_drawn_appearance(unit, drawn, spacing)
            separability = model.separability
            appearance = appearance_logits(distance, unit, model, spacing)
        _report(progress, 0.6)
        sam, score = None, 0.0
        if self.sam is not None and self.config.sam:
            key = volume_key(image.array, drawn.axis, window, self.sam.model.image_size)
            estimate = CompletionParts(drawn, distance, appearance, separability, None, 0.0)
            sam, score = self._outline(key, unit, drawn, estimate.probability(self.config.fusion) >= 0.5, progress)
        return CompletionParts(drawn, distance, appearance, separability, sam, score)

    def _outline(self, key: tuple, unit: np.ndarray, drawn: DrawnSlices, estimate: np.ndarray,
                 progress: Progress | None) -> tuple[np.ndarray | None, float]:
        """SAM's log-odds on the slices the estimate reaches (None if its fidelity gives it no
        weight), and its fidelity on the drawn slices."""
        assert self.sam is not None
        box = crop_box(np.concatenate([drawn.masks, estimate]), self.config.sam_margin)
        score = fidelity(self.sam, key, unit, drawn.indices, drawn.masks, box)
        if self.config.fusion.sam(score) <= 0:
            return None, score
        slices = np.setdiff1d(np.flatnonzero(estimate.any(axis=(1, 2))), drawn.indices)
        out = np.zeros(unit.shape, np.float32)
        for number, start in enumerate(range(0, len(slices), self.sam.batch_size)):
            rows = slices[start : start + self.sam.batch_size]
            embeddings = self.sam.embeddings(key, unit, rows, box)
            out[rows] = self.sam.outline(embeddings, estimate[rows], box, unit.shape[1:])
            _report(progress, 0.6 + 0.35 * min(1.0, (number + 1) * self.sam.batch_size / max(len(slices), 1)))
        return out, score


def fit_drawn_appearance(unit: np.ndarray, drawn: DrawnSlices, spacing: tuple[float, float, float]) -> AppearanceModel:
    """The appearance model of the drawn slices (`unit` [n, rows, cols] cut along the drawn axis)."""
    plane = (spacing[1], spacing[2])
    return fit_appearance(image_features(unit[drawn.indices], plane), drawn.masks, plane)


def appearance_logits(distance: np.ndarray, unit: np.ndarray, model: AppearanceModel,
                      spacing: tuple[float, float, float]) -> np.ndarray:
    """The appearance log-odds within the model's band around the prior (0 elsewhere)."""
    plane = (spacing[1], spacing[2])
    out = np.zeros(distance.shape, np.float32)
    for z in np.flatnonzero((distance > -model.band_mm).any(axis=(1, 2))):
        near = distance[z] > -model.band_mm
        features = image_features(unit[z : z + 1], plane)[0]
        out[z][near] = model.logits(features[near])
    return out


def _drawn_warnings(drawn: DrawnSlices) -> list[str]:
    warnings = []
    if drawn.other_voxels:
        warnings.append(f"{drawn.other_voxels} drawn voxels lie on slices of another orientation: completing from the "
                        f"{drawn.count} slices along {_axis_name(drawn.axis)} (the others are kept, not used)")
    if drawn.count == 1:
        warnings.append("only one slice is drawn: the extent beyond it is a guess from its size; draw a slice near "
                        "each end of the structure for a reliable result")
    return warnings


def _axis_name(axis: int) -> str:
    return f"array axis {'kji'[axis]}"


def _span(present: np.ndarray) -> slice:
    indices = np.flatnonzero(present)
    return slice(int(indices[0]), int(indices[-1]) + 1)


def _report(progress: Progress | None, value: float) -> None:
    if progress:
        progress(value)
