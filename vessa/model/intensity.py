"""Intensity policy: grey-level volumes -> the 3-channel normalised input sam2 expects.

Policy (the same in training and inference):
1. CT is recognised by `modality == "CT"`, or, when no modality is given, by values below
   -500 (air in Hounsfield units). CT is clipped to a fixed window (`CT_WINDOWS`, default
   "soft_tissue" = [-160, 240] HU, level 40 / width 400) and scaled to [0, 1].
2. Everything else (MR, microscopy, ...) is clipped to the 0.5 / 99.5 percentiles of the
   whole volume and scaled to [0, 1] (percentiles from at most ~2 M evenly strided voxels).
3. The [0, 1] slice is replicated to 3 channels and normalised with the ImageNet
   mean/std that sam2's image predictor uses.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (-160.0, 240.0),
    "wide": (-1000.0, 1000.0),
    "lung": (-1350.0, 150.0),
    "bone": (-450.0, 1050.0),
    "brain": (0.0, 80.0),
}
PERCENTILES = (0.5, 99.5)
CT_AIR_THRESHOLD = -500.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MAX_PERCENTILE_SAMPLES = 2_000_000
ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def is_ct(array: np.ndarray, modality: str = "") -> bool:
    """True for CT: modality "CT", or (modality unknown) any value below -500."""
    if modality:
        return modality.strip().upper() == "CT"
    return bool(np.nanmin(array) < CT_AIR_THRESHOLD)


def intensity_range(array: np.ndarray, modality: str = "", ct_window: str = "soft_tissue") -> tuple[float, float]:
    """The (low, high) values mapped to 0 and 1 for this volume (see module docstring)."""
    if is_ct(array, modality):
        if ct_window not in CT_WINDOWS:
            raise ValueError(f"ct_window={ct_window!r}: expected one of {sorted(CT_WINDOWS)}")
        return CT_WINDOWS[ct_window]
    flat = array.reshape(-1)
    step = max(1, flat.size // _MAX_PERCENTILE_SAMPLES)
    low, high = np.percentile(flat[::step], PERCENTILES)
    if high <= low:  # constant image: everything maps to 0
        high = low + 1.0
    return float(low), float(high)


def to_unit_range(array: ArrayOrTensor, low: float, high: float) -> ArrayOrTensor:
    """Clip to [low, high] and scale to float32 [0, 1] (a tensor stays on its device)."""
    if isinstance(array, torch.Tensor):
        return ((array.float() - low) / (high - low)).clamp_(0.0, 1.0)
    scaled = (np.asarray(array, dtype=np.float32) - low) / (high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def normalize_for_sam(unit: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] values in [0, 1] -> [N, 3, H, W] ImageNet-normalised sam2 input."""
    mean = unit.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = unit.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (unit.expand(-1, 3, -1, -1) - mean) / std
