"""Few-slice completion: a structure drawn on a few slices of a volume, filled in on the rest.

Pipeline (`SliceCompleter.complete`):
1. find the drawn slices and their axis (`drawn_slices`);
2. shape prior: the drawn masks' signed distances d (mm) carried along the anatomy to the
   other slices, interpolated between drawn slices and closed beyond them (`slice_prior`);
3. appearance: a per-case classifier fitted on the drawn slices (`appearance`), scored by its
   separability (held-out Dice on the drawn slices themselves);
4. SAM (`sam_refine`, when the completer has a model): scored by its fidelity (how well it
   reproduces the drawn slices from their boxes); where that earns it a weight, each other
   slice is outlined by SAM prompted by the box of the estimate of steps 2-3 there;
5. fusion (`fusion`): logit = d / s + gated appearance + gated SAM, the prior's scale s growing
   with the distance to the nearest drawn slice; whatever was drawn stays as drawn: drawn slices
   keep their masks exactly, voxels drawn elsewhere stay in.
Distances and the appearance's blurs are in mm of the anatomy at a human's size
(`anatomy_scale.human_size_spacing`: a small animal's own mm over its scale), so the settings
hold at any size. The fusion constants are fitted on structures of the training atlases
(`benchmarks/bench_completion.py --fit`) and stored in `FusionConfig`'s defaults.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vessa.errors import InputError
from vessa.io import Volume
from vessa.model.feature_cache import volume_key
from vessa.model.intensity import intensity_range, to_unit_range
from vessa.priors.anatomy_scale import human_size_spacing
from vessa.priors.appearance import fit_appearance, image_features
from vessa.priors.drawn_slices import DrawnSlices, find_drawn_slices
from vessa.priors.fusion import FusionConfig, SliceParts, appearance_logits
from vessa.priors.sam_refine import SliceSam, crop_box, fidelity, outline_estimate
from vessa.priors.slice_flow import FieldCache
from vessa.priors.slice_prior import SlicePriorConfig, slice_prior

Progress = Callable[[float], None]


@dataclass(frozen=True)
class CompletionConfig:
    """The parts of few-slice completion; `appearance` / `sam` False leave that part out."""

    prior: SlicePriorConfig = field(default_factory=SlicePriorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    appearance: bool = True
    sam: bool = True
    sam_margin: float = 0.5  # the SAM crop extends the estimate's box by this fraction per side


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
        self.fields = FieldCache()  # the image's slice-to-slice deformations, kept for the next call

    def complete(self, image: Volume, mask: np.ndarray, modality: str = "", axis: int | None = None,
                 progress: Progress | None = None, empty: Sequence[int] = ()) -> CompletionResult:
        """Fill in the structure drawn on a few slices of `mask` (k, j, i) over `image`;
        `empty`: slices along `axis` the user marked as not holding it (kept empty, and the
        structure closes before them)."""
        start = time.perf_counter()
        encoded_before = self.sam.encoded if self.sam else 0
        mask = np.asarray(mask, bool)
        result = self.result(mask, self.parts(image, mask, modality, axis, progress, empty=empty))
        result.encoded = (self.sam.encoded - encoded_before) if self.sam else 0
        result.seconds = time.perf_counter() - start
        _report(progress, 1.0)
        return result

    def result(self, mask: np.ndarray, parts: SliceParts) -> CompletionResult:
        """The fused result of `parts` (step 5) for the drawn `mask` (`encoded`, `seconds`: 0, the caller counts)."""
        fusion, drawn = self.config.fusion, parts.fixed
        probability = parts.probability(fusion)
        uncertainty = np.minimum(probability, 1 - probability).sum(axis=(1, 2))
        uncertainty[drawn.indices] = 0
        uncertainty[drawn.empty] = 0
        next_slice = int(uncertainty.argmax()) if uncertainty.max() > 0 else None
        warnings = _drawn_warnings(drawn)
        if not (probability >= 0.5).sum() > drawn.masks.sum():
            warnings.append("the completion adds nothing beyond the drawn slices")
        probability = np.ascontiguousarray(np.moveaxis(probability, 0, drawn.axis))
        probability[mask] = 1.0  # whatever was drawn stays drawn
        return CompletionResult(
            probability, drawn, uncertainty.astype(np.float32), next_slice, parts.separability,
            fusion.appearance(parts.separability) if parts.appearance is not None else 0.0, parts.fidelity,
            fusion.sam(parts.fidelity) if parts.sam is not None else 0.0, 0, 0.0, warnings,
        )

    def parts(self, image: Volume, mask: np.ndarray, modality: str = "", axis: int | None = None,
              progress: Progress | None = None, every_part: bool = False, empty: Sequence[int] = ()) -> SliceParts:
        """Steps 1-4 of the module docstring: the appearance's log-odds and SAM's outlines are
        computed only where their gates give them a weight, or always with `every_part` (to
        measure or fit the fusion)."""
        if mask.shape != image.shape:
            raise InputError(f"the drawn segment's grid {mask.shape} differs from the image's {image.shape}")
        image.require_finite("the image")
        drawn = find_drawn_slices(mask, axis)
        if len(empty):
            if axis is None:
                raise InputError("slices drawn empty need the axis they lie on")
            drawn = dataclasses.replace(drawn, empty=np.setdiff1d(np.asarray(empty, np.int64), drawn.indices))
        spacing = human_size_spacing(image)  # the settings in mm hold for a small animal's anatomy too
        spacing = (float(spacing[drawn.axis]), *(float(spacing[a]) for a in range(3) if a != drawn.axis))
        plane = (spacing[1], spacing[2])
        window = intensity_range(image.array, modality)
        unit = np.moveaxis(to_unit_range(image.array, *window), drawn.axis, 0)
        key = volume_key(image.array, drawn.axis, window)
        _report(progress, 0.05)
        distance = slice_prior(unit, drawn, spacing, self.config.prior, self.fields, key)
        _report(progress, 0.5)
        appearance, separability = None, 0.0
        if self.config.appearance:
            gate = None if every_part else self.config.fusion.appearance.threshold
            model = fit_appearance(image_features(unit[drawn.indices], plane), drawn.masks, plane, gate=gate,
                                   pooled=True)
            separability = model.separability
            if every_part or self.config.fusion.appearance(separability) > 0:
                appearance = appearance_logits(distance, unit, model, plane)
        _report(progress, 0.6)
        parts = SliceParts(drawn, distance, appearance, separability, None, 0.0,
                           drawn.slices_to_known(len(unit)) * spacing[0])
        if self.sam is not None and self.config.sam:
            key = (*key, self.sam.model.image_size)
            estimate = parts.probability(self.config.fusion) >= 0.5
            present = np.concatenate([drawn.masks, estimate])
            box = self.sam.sticky(key, crop_box(present, self.config.sam_margin), present)
            gate = None if every_part else self.config.fusion.sam.threshold
            parts.fidelity = fidelity(self.sam, key, unit, drawn.indices, drawn.masks, box, gate)
            if every_part or self.config.fusion.sam(parts.fidelity) > 0:
                parts.sam = outline_estimate(self.sam, key, unit, estimate, box, drawn.indices,
                                             lambda done: _report(progress, 0.6 + 0.35 * done))
        return parts


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


def _report(progress: Progress | None, value: float) -> None:
    if progress:
        progress(value)
