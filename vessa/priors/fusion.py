"""Combining a structure's prior, appearance and SAM outlines into one probability.

Shared by few-slice completion (`completion`) and templates from other volumes (`transfer`):
each builds `SliceParts` on the volume cut along one axis, then
    logit = d / s + w_a(separability) x appearance + w_s(fidelity) x SAM,
with d the prior's signed distance (mm; on a small animal's scan, mm of its anatomy grown to a
human's size: `anatomy_scale.human_size_spacing`), s = prior_scale_mm x (1 + D / prior_doubling_mm)
its scale, D the distance (mm) from the slice to the nearest known slice (0 without known slices:
templates of other volumes), and each part's weight a `Gate` of how well that part reproduced
the known slices: weight x clip((score - threshold) / (1 - threshold), 0, 1). The prior's scale
grows away from the known slices because its boundary is less sure there: a drawn mask carried
further has drifted further. It moves no boundary where the prior decides alone, but the
probability (the confidence shown) and the slice suggested for checking follow the errors.
probability = sigmoid(logit); 0 where the prior does not reach; known slices as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vessa.priors.appearance import AppearanceModel, feature_reach, image_features
from vessa.priors.drawn_slices import DrawnSlices, bounding_box
from vessa.priors.slice_prior import ABSENT


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
    """How the parts are combined (module docstring). prior_doubling_mm: the distance from the
    nearest known slice at which the prior's scale has doubled (inf: the same everywhere; fitted
    on the training structures by the gain of a correction at the suggested slice,
    `bench_completion.py --fit-doubling`)."""

    prior_scale_mm: float = 2.0
    prior_doubling_mm: float = 10.0
    appearance: Gate = Gate(0.5, 0.9)
    sam: Gate = Gate(0.5, 0.9)

    def __post_init__(self) -> None:
        for name in ("prior_scale_mm", "prior_doubling_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")


@dataclass
class SliceParts:
    """Every part's output on a slice stack [n, rows, cols] (the volume cut along one axis):
    `fixed`, slices whose masks are known (drawn slices; none for templates of other volumes),
    distance (mm, the prior; ABSENT where it does not reach), appearance (log-odds, 0 outside
    its band) and sam (log-odds on the slices SAM outlined, else None), with the scores their
    weights come from; known_mm: per slice, the distance (mm) to the nearest known slice (None:
    no slice is known)."""

    fixed: DrawnSlices
    distance: np.ndarray
    appearance: np.ndarray | None
    separability: float
    sam: np.ndarray | None
    fidelity: float
    known_mm: np.ndarray | None = None

    def logits(self, fusion: FusionConfig) -> np.ndarray:
        """The fused log-odds (module docstring)."""
        scale = fusion.prior_scale_mm
        if self.known_mm is not None:
            scale = scale * (1.0 + self.known_mm / fusion.prior_doubling_mm)[:, None, None].astype(np.float32)
        logits = self.distance / scale
        if self.appearance is not None and fusion.appearance(self.separability) > 0:
            logits = logits + fusion.appearance(self.separability) * self.appearance
        if self.sam is not None and fusion.sam(self.fidelity) > 0:
            logits = logits + fusion.sam(self.fidelity) * self.sam
        return logits

    def reach(self) -> tuple[slice, slice, slice]:
        """The bounding box [n, rows, cols] of where the prior reaches (the rest is 0 in every fusion)."""
        return bounding_box(self.distance > ABSENT)

    def cropped(self, box: tuple[slice, slice, slice]) -> SliceParts:
        """These parts on a box of the slice stack (the fixed slices inside it, cropped)."""
        inside = (self.fixed.indices >= box[0].start) & (self.fixed.indices < box[0].stop)
        empty = self.fixed.empty[(self.fixed.empty >= box[0].start) & (self.fixed.empty < box[0].stop)]
        fixed = DrawnSlices(self.fixed.axis, self.fixed.indices[inside] - box[0].start,
                            self.fixed.masks[inside][:, box[1], box[2]], self.fixed.other_voxels,
                            empty - box[0].start)
        return SliceParts(fixed, self.distance[box], None if self.appearance is None else self.appearance[box],
                          self.separability, None if self.sam is None else self.sam[box], self.fidelity,
                          None if self.known_mm is None else self.known_mm[box[0]])

    def probability(self, fusion: FusionConfig) -> np.ndarray:
        """sigmoid(logits), 0 where the prior does not reach, fixed slices as they are (slices
        known to be empty: 0) [n, rows, cols]."""
        probability = (1.0 / (1.0 + np.exp(-np.clip(self.logits(fusion), -30, 30)))).astype(np.float32)
        probability[self.distance <= ABSENT] = 0.0
        probability[self.fixed.indices] = self.fixed.masks
        probability[self.fixed.empty] = 0.0
        return probability


def slice_certainty(probability: np.ndarray) -> np.ndarray:
    """Per slice of [n, rows, cols], how sure the probability is: 1 - sum(min(p, 1 - p)) /
    (voxels at p >= 0.5 + sum(min(p, 1 - p))); 1 on slices with nothing uncertain."""
    doubt = np.minimum(probability, 1 - probability).sum(axis=(1, 2))
    inside = (probability >= 0.5).sum(axis=(1, 2))
    return (1.0 - doubt / np.maximum(inside + doubt, 1e-9)).astype(np.float32)


def appearance_logits(distance: np.ndarray, unit: np.ndarray, model: AppearanceModel,
                      plane: tuple[float, float]) -> np.ndarray:
    """The appearance log-odds [n, rows, cols] within the model's band around the prior (0
    elsewhere); `plane`: the in-plane spacing (mm) of the slices of `unit` [n, rows, cols]."""
    out = np.zeros(distance.shape, np.float32)
    reach = feature_reach(plane)
    for z in np.flatnonzero((distance > -model.band_mm).any(axis=(1, 2))):
        near = distance[z] > -model.band_mm
        # features on the band's box grown by their reach: the same values as on the whole slice
        box = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in bounding_box(near))
        features = image_features(unit[z : z + 1][(slice(None), *box)], plane)[0]
        out[z][box][near[box]] = model.logits(features[near[box]])
    return out
