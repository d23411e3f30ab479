"""Synthetic volumes for the priors' tests: ellipsoids with edges on a noisy background."""

from __future__ import annotations

import numpy as np

from vessa.io import Volume


def ellipsoid(shape: tuple[int, int, int], center: tuple[float, float, float], radii: tuple[float, float, float],
              drift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A boolean (k, j, i) ellipsoid; `drift` moves its centre in (j, i) by that much per slice k."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    cj = center[1] + drift[0] * (k - center[0])
    ci = center[2] + drift[1] * (k - center[0])
    return ((k - center[0]) / radii[0]) ** 2 + ((j - cj) / radii[1]) ** 2 + ((i - ci) / radii[2]) ** 2 <= 1.0


def blob_volume(mask: np.ndarray, contrast: float = 100.0, noise: float = 5.0, seed: int = 0) -> Volume:
    """An image where `mask` is brighter than its surroundings by `contrast` (plus Gaussian noise)."""
    rng = np.random.default_rng(seed)
    array = 50.0 + contrast * mask + rng.normal(0.0, noise, mask.shape)
    return Volume(array.astype(np.float32), spacing=(1.0, 1.0, 2.0))


def drawn_on(mask: np.ndarray, slices: list[int], axis: int = 0) -> np.ndarray:
    """`mask` kept only on the given slices along `axis`."""
    drawn = np.zeros_like(mask)
    index = [slice(None)] * 3
    for z in slices:
        index[axis] = z
        drawn[tuple(index)] = mask[tuple(index)]
    return drawn


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)
