"""Templates from other volumes: a structure segmented in a new volume from exemplars.

Pipeline (`TemplateTransfer.segment`), on the target cut along its slicing axis:
1. registration prior: each template image is registered onto the target (`registration`:
   affine, then deformable for templates of the same modality) and its mask resampled there
   (soft); the templates' mean p is the prior, and d, the in-plane signed distance (mm) of
   p >= 0.5, its distance map (slices where p < 0.5 everywhere: absent); the last
   `REGISTRATIONS_KEPT` registrations are kept, so a second structure of the same templates
   and target is not registered again (a displacement field at 3 mm: up to ~60 MB on a CT);
2. appearance (`appearance`): a classifier of the target's own look, fitted on up to
   `appearance_slices` target slices with the prior's mask as labels (the templates' grey
   levels may differ from the target's; the registered shape tells where to learn), scored by
   its held-out separability on those slices;
3. SAM (`sam_refine`): scored by its fidelity on up to `fidelity_slices` slices of each
   template (can SAM outline this structure in such images from a box?); where that earns
   it a weight, each target slice is outlined, prompted by the box of the estimate of 1-2;
4. fusion (`fusion`), with constants calibrated for this path (`TransferConfig.fusion`).
The text is not used by this path: the templates say what the structure is.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vessa.io import Template, Volume
from vessa.model.feature_cache import volume_key
from vessa.model.intensity import intensity_range, to_unit_range
from vessa.model.slicing import orient_like, slicing_axis
from vessa.model.volume_segmenter import SegmentResult, check_templates
from vessa.plausibility import image_modality, modality_mismatch
from vessa.priors.anatomy_scale import human_size_spacing
from vessa.priors.appearance import fit_appearance, image_features
from vessa.priors.drawn_slices import DrawnSlices
from vessa.priors.fusion import FusionConfig, Gate, SliceParts, appearance_logits, slice_certainty
from vessa.priors.registration import Registration, RegistrationConfig, register, warp_mask
from vessa.priors.sam_refine import SliceSam, crop_box, fidelity, outline_estimate
from vessa.priors.slice_prior import ABSENT, signed_distance

Progress = Callable[[float], None]
MAX_TEMPLATES = 3
REGISTRATIONS_KEPT = MAX_TEMPLATES  # registrations kept for the next structure of the same templates and target


@dataclass(frozen=True)
class TransferConfig:
    """The parts of template transfer; `appearance` / `sam` False leave that part out."""

    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    fusion: FusionConfig = FusionConfig(prior_scale_mm=2.0, appearance=Gate(2.0, 0.7), sam=Gate(1.0, 0.8))
    appearance: bool = True
    sam: bool = True
    sam_margin: float = 0.5
    appearance_slices: int = 8
    fidelity_slices: int = 4
    max_templates: int = MAX_TEMPLATES


@dataclass
class TransferParts:
    """The parts on the target's slice stack and the template registrations' mean prior p
    ([n, rows, cols], for the "registration alone" baseline), seconds, the lowest
    correlation of a histogram-matched template with the target (None: not measured), and
    which templates' registration failed, and why."""

    slices: SliceParts
    prior: np.ndarray
    registration_seconds: float
    stopped_early: bool
    correlation: float | None = None
    failed: list[str] = field(default_factory=list)


class TemplateTransfer:
    """Template transfer (module docstring). sam: a `SliceSam` (None: no SAM step). notes: what
    every result warns about (e.g. why there is no SAM step). Has the `segment` interface of
    `VolumeSegmenter`, so the effect and the CLI use either."""

    slice_step = 1  # every slice is segmented (the effect's "Fast pass" has nothing to skip here)

    def __init__(self, sam: SliceSam | None = None, config: TransferConfig = TransferConfig(),
                 notes: tuple[str, ...] = ()):
        self.sam = sam
        self.config = config
        self.notes = notes
        self._registrations: OrderedDict[tuple, Registration] = OrderedDict()  # see `_register`

    @property
    def device(self):
        return self.sam.device if self.sam else "cpu"

    def segment(self, image: Volume, templates: list[Template], text: str = "", progress: Progress | None = None,
                modality: str = "") -> SegmentResult:
        """Probability volume of the templates' structure in `image` (module docstring)."""
        start = time.perf_counter()
        result = self.result(image, self.parts(image, templates, text, progress, modality))
        result.seconds = time.perf_counter() - start
        if progress:
            progress(1.0)
        return result

    def result(self, image: Volume, parts: TransferParts) -> SegmentResult:
        """The fused result of `parts` (step 4) on the image grid (`seconds`: 0, the caller times)."""
        probability = parts.slices.probability(self.config.fusion)
        axis = parts.slices.fixed.axis
        out = image.with_array(np.ascontiguousarray(np.moveaxis(probability, 0, axis)))
        warnings = list(self.notes)
        config = self.config.registration
        if parts.correlation is not None and parts.correlation < config.demons_min_correlation:
            how = ("affinely on mutual information, then (templates of the same modality) deformed on local "
                   "structure (MIND demons)" if config.deformable and config.mind_iterations else "affinely only")
            warnings.append(f"the template images' grey levels do not match this image's (correlation "
                            f"{parts.correlation:.2f} after histogram matching): they were registered {how}, "
                            "which is less accurate than on matching grey levels; check the result")
        if parts.stopped_early:
            warnings.append(f"registration stopped at its time limit ({config.time_limit_s:g} s per template) before "
                            "it finished; check the result")
        warnings += [f"registration failed for {what}; that template was only centred on this image, check the "
                     "result" for what in parts.failed]
        return SegmentResult(out, slice_certainty(probability), 0.0, axis, len(probability), str(self.device),
                             warnings)

    def parts(self, image: Volume, templates: list[Template], text: str = "", progress: Progress | None = None,
              modality: str = "", every_part: bool = False) -> TransferParts:
        """Steps 1-3 of the module docstring: the appearance's log-odds and SAM's outlines are
        computed only where their gates give them a weight, or always with `every_part`."""
        templates = check_templates(image, templates, self.config.max_templates)
        modality = image_modality(image.array, modality)
        axis = slicing_axis(image.shape, image.spacing)
        spacing = human_size_spacing(image)  # the settings in mm hold for a small animal's anatomy too
        plane = tuple(float(spacing[a]) for a in range(3) if a != axis)
        window = intensity_range(image.array, modality)
        unit = np.moveaxis(to_unit_range(image.array, *window), axis, 0)
        started, early, warped, correlations, failed = time.perf_counter(), False, [], [], []
        target_id = _volume_id(image)
        for number, template in enumerate(templates):
            registration = self._register(template, image, target_id, modality)
            early = early or registration.stopped_early
            if registration.correlation is not None:
                correlations.append(registration.correlation)
            if registration.failed:
                failed.append(f"template {number + 1} ({template.case_id or template.name}): {registration.failed}")
            warped.append(warp_mask(template.mask, template.image, image, registration.transform))
            _report(progress, 0.5 * (number + 1) / len(templates))
        seconds = time.perf_counter() - started
        prior = np.moveaxis(np.mean(warped, axis=0), axis, 0)
        estimate = prior >= 0.5
        distance = np.stack([signed_distance(m, plane) for m in estimate])
        none = DrawnSlices(axis, np.zeros(0, np.int64), np.zeros((0, *unit.shape[1:]), bool), 0)
        parts = SliceParts(none, distance, None, 0.0, None, 0.0)
        present = np.flatnonzero(estimate.any(axis=(1, 2)))
        if self.config.appearance and len(present):
            rows = _spread(present, self.config.appearance_slices)
            gate = None if every_part else self.config.fusion.appearance.threshold
            model = fit_appearance(image_features(unit[rows], plane), estimate[rows], plane, gate=gate)
            parts.separability = model.separability
            if every_part or self.config.fusion.appearance(parts.separability) > 0:
                parts.appearance = appearance_logits(distance, unit, model, plane)
        _report(progress, 0.6)
        if self.sam is not None and self.config.sam and len(present):
            parts.fidelity = self._fidelity(templates, image, axis)
            if every_part or self.config.fusion.sam(parts.fidelity) > 0:
                refined = parts.probability(self.config.fusion) >= 0.5
                if refined.any():
                    key = volume_key(image.array, axis, window, self.sam.model.image_size)
                    box = crop_box(refined, self.config.sam_margin)
                    parts.sam = outline_estimate(self.sam, key, unit, refined, box, np.zeros(0, np.int64),
                                                 lambda done: _report(progress, 0.6 + 0.35 * done))
        parts.distance[~estimate.any(axis=(1, 2))] = ABSENT
        return TransferParts(parts, prior, seconds, early, min(correlations) if correlations else None, failed)

    def _register(self, template: Template, image: Volume, image_id: tuple, modality: str) -> Registration:
        """`register` of the template's image onto `image` (`_volume_id` `image_id`), or the
        registration an earlier call made of the same pair (another structure of the same templates)."""
        template_modality = image_modality(template.image.array, template.modality)
        key = (_volume_id(template.image), image_id, modality, template_modality)
        if key in self._registrations:
            self._registrations.move_to_end(key)
            return self._registrations[key]
        registration = register(template.image, image, self.config.registration,
                                same_modality=not modality_mismatch(modality, template_modality),
                                flatten="CT" not in (modality, template_modality))
        self._registrations[key] = registration
        while len(self._registrations) > REGISTRATIONS_KEPT:
            self._registrations.popitem(last=False)
        return registration

    def _fidelity(self, templates: list[Template], image: Volume, axis: int) -> float:
        """SAM's mean fidelity on a few slices of each template, cut like the target."""
        assert self.sam is not None
        scores = []
        for template in templates:
            array, _ = orient_like(template.image.array, template.image.direction, image.direction)
            mask, _ = orient_like(template.mask, template.image.direction, image.direction)
            window = intensity_range(array, template.modality)
            unit = np.moveaxis(to_unit_range(array, *window), axis, 0)
            masks = np.moveaxis(mask, axis, 0)
            rows = _spread(np.flatnonzero(masks.any(axis=(1, 2))), self.config.fidelity_slices)
            key = volume_key(np.ascontiguousarray(array), axis, window, self.sam.model.image_size)
            box = crop_box(masks[rows], self.config.sam_margin)
            scores.append(fidelity(self.sam, key, unit, rows, masks[rows], box))
        return float(np.mean(scores))


def _volume_id(volume: Volume) -> tuple:
    """The volume's content and geometry, as a key."""
    return volume_key(volume.array, tuple(volume.spacing), tuple(volume.origin), tuple(np.ravel(volume.direction)))


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` of `indices`, evenly spaced over them (first and last included)."""
    if len(indices) <= count:
        return indices
    return indices[np.unique(np.round(np.linspace(0, len(indices) - 1, count)).astype(int))]


def _report(progress: Progress | None, value: float) -> None:
    if progress:
        progress(value)
