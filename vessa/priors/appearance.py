"""Per-case appearance model: what the structure looks like next to its surroundings.

Fitted at inference on the labelled slices of the case itself (drawn slices, or template
slices), it classifies each pixel near the structure as inside or outside from local image
features: the intensity in [0, 1], its Gaussian blurs at 1 and 2 mm, the gradient magnitude
at 1 mm and the Laplacian of Gaussian at 1.5 mm, plus any extra per-pixel feature maps the
caller gives (e.g. SAM image embeddings); callers pass `anatomy_scale.human_size_spacing`, so
the blurs follow a small animal's anatomy. The classifier is scikit-learn's
HistGradientBoostingClassifier, trained on the pixels within a band around the labelled
masks (the structure and its near background, the only pixels it will be asked about).

How much the appearance can be trusted differs from case to case (a brain mask has its own
grey levels; a cortical parcel looks like its neighbours), so `separability` measures it on
the labelled slices themselves: fitted on all labelled slices but one, the Dice of its
prediction in the band of the held-out slice, averaged over held-out slices (with a single
labelled slice, over the two halves of a checkerboard of 16-pixel blocks; 0, unknown, where
no held-out part shows the structure). With `pooled`, the Dice is pooled over the held-out
slices instead (overlaps and sizes summed), so a slice weighs as much as it covers: a user's
drawn slices, where a structure's tip of a few pixels drawn as a correction, whose own Dice is
noise, would otherwise shut the gate. Templates' slices spread over a registered estimate keep
the mean: their gate was calibrated on it, and pooled it opens where the appearance lowers the
result (the macaque of protocol (b), benchmarks/RESULTS.md). A caller that uses
the model only above a separability threshold (a fusion gate) passes it, and the folds stop as
soon as that decision is settled; the classifier on all labelled slices is trained only when
its log-odds are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

BLUR_MM = (1.0, 2.0)
GRADIENT_MM = 1.0
LAPLACIAN_MM = 1.5
MIN_BAND_PIXELS = 3
MAX_TRAINING_PIXELS = 50_000  # a random subset beyond: on a CT organ 200 k cost 5 s and changed Dice by 0.0006


def image_features(unit_slices: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Per-pixel features [n, rows, cols, 5] of slices [n, rows, cols] in [0, 1] (module docstring)."""
    slices = np.asarray(unit_slices, np.float32)

    def sigma(mm: float) -> tuple[float, float, float]:
        return (0.0, mm / spacing[0], mm / spacing[1])

    features = [slices]
    features += [ndimage.gaussian_filter(slices, sigma(mm)) for mm in BLUR_MM]
    features.append(ndimage.gaussian_gradient_magnitude(slices, sigma(GRADIENT_MM)))
    features.append(ndimage.gaussian_laplace(slices, sigma(LAPLACIAN_MM)))
    return np.stack(features, axis=-1).astype(np.float32)


def feature_reach(spacing: tuple[float, float]) -> int:
    """Pixels around a point that its features depend on (scipy's Gaussian filters reach 4 sigma)."""
    return int(np.ceil(4.0 * max(*BLUR_MM, GRADIENT_MM, LAPLACIAN_MM) / min(spacing))) + 1


def band_width(masks: np.ndarray, spacing: tuple[float, float]) -> float:
    """Band (mm) around labelled masks [m, rows, cols] where the model is fitted and used: half
    the masks' mean equivalent radius, at least `MIN_BAND_PIXELS` pixels."""
    areas = masks.reshape(len(masks), -1).sum(axis=1) * spacing[0] * spacing[1]
    radius = float(np.sqrt(areas[areas > 0].mean() / np.pi)) if (areas > 0).any() else 0.0
    return max(0.5 * radius, MIN_BAND_PIXELS * max(spacing))


@dataclass
class AppearanceModel:
    """A per-case classifier (`fit_appearance`), its band (mm) and its measured separability.
    The classifier is trained on the band's pixels `x` [N, F] / `y` [N] when first used, so a
    caller that only needs the separability (a gate that stays shut) does not pay for it."""

    x: np.ndarray
    y: np.ndarray
    band_mm: float
    separability: float
    seed: int = 0

    @cached_property
    def classifier(self):
        return _train(self.x, self.y, self.seed)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Log-odds [...] of the structure for feature vectors [..., F] (clipped to +-7)."""
        return _logits(self.classifier, features)


def fit_appearance(
    features: np.ndarray, masks: np.ndarray, spacing: tuple[float, float], seed: int = 0, gate: float | None = None,
    pooled: bool = False,
) -> AppearanceModel:
    """Fit on labelled slices: `features` [m, rows, cols, F] and their masks [m, rows, cols].

    gate: the separability at or below which the caller does not use the model; held-out
    folds stop once the rest could not lift the separability above it even at Dice 1 (it is
    then that of the folds run, and no use of the model changes). pooled: the held-out Dice
    pooled over slices instead of averaged (module docstring)."""
    masks = np.asarray(masks, bool)
    band = band_width(masks, spacing)
    near = np.stack([_near(mask, band, spacing) for mask in masks])
    separability = _separability(features, masks, near, seed, gate, pooled)
    return AppearanceModel(features[near], masks[near], band, separability, seed)


def _logits(classifier, features: np.ndarray) -> np.ndarray:
    flat = features.reshape(-1, features.shape[-1])
    probability = classifier.predict_proba(flat)[:, 1] if len(flat) else np.zeros(0)
    probability = np.clip(probability, 1e-3, 1 - 1e-3)
    return np.log(probability / (1 - probability)).reshape(features.shape[:-1]).astype(np.float32)


def _near(mask: np.ndarray, band_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Pixels of the mask and within `band_mm` of it."""
    if not mask.any():
        return np.zeros(mask.shape, bool)
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= band_mm


def _train(x: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    if len(x) > MAX_TRAINING_PIXELS:
        keep = np.random.default_rng(seed).choice(len(x), MAX_TRAINING_PIXELS, replace=False)
        x, y = x[keep], y[keep]
    if y.all() or not y.any():  # one class only
        return _Constant(float(y[0]))
    classifier = HistGradientBoostingClassifier(max_iter=60, learning_rate=0.1, max_leaf_nodes=15,
                                                l2_regularization=1.0, random_state=seed)
    return classifier.fit(x, y)


class _Constant:
    """A classifier that answers one probability everywhere (labelled pixels of one class)."""

    def __init__(self, probability: float):
        self.probability = probability

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([1 - self.probability, self.probability], (len(x), 1))


def _separability(features: np.ndarray, masks: np.ndarray, near: np.ndarray, seed: int,
                  gate: float | None, pooled: bool) -> float:
    """Held-out Dice of the appearance alone in the band of labelled slices (module docstring)."""
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    if len(masks) > 1:
        for held in range(len(masks)):
            train = near.copy()
            train[held] = False
            test = np.zeros_like(near)
            test[held] = near[held]
            folds.append((train, test))
    else:
        rows, cols = masks.shape[1:]
        blocks = ((np.arange(rows)[:, None] // 16) + (np.arange(cols)[None, :] // 16)) % 2 == 0
        folds = [(near & blocks[None], near & ~blocks[None]), (near & ~blocks[None], near & blocks[None])]
    # a held-out part that shows none of the structure cannot score it (Dice of nothing against
    # nothing would read 1: a structure inside one block of a single slice)
    folds = [(train, test) for train, test in folds
             if masks[test].any() and masks[train].any() and not masks[train].all()]
    sizes = [int(masks[test].sum()) for _, test in folds]
    scored: list[tuple[int, int]] = []  # per fold run: overlap, predicted + true size
    for done, (train, test) in enumerate(folds):
        perfect = [(size, 2 * size) for size in sizes[done:]]  # the folds not run, at Dice 1
        if gate is not None and scored and _dice(scored + perfect, pooled) <= gate:
            break  # the gate stays shut whatever the other folds score
        predicted = _logits(_train(features[train], masks[train], seed), features[test]) > 0
        scored.append((int((predicted & masks[test]).sum()), int(predicted.sum()) + sizes[done]))
    return _dice(scored, pooled) if scored else 0.0


def _dice(scored: list[tuple[int, int]], pooled: bool) -> float:
    """Dice of (overlap, size sum) pairs: pooled over them, or their mean."""
    if pooled:
        return 2.0 * sum(overlap for overlap, _ in scored) / sum(total for _, total in scored)
    return float(np.mean([2.0 * overlap / total for overlap, total in scored]))
