"""Hand-built feature maps with a known answer, shared by the matching and prompt tests."""

from __future__ import annotations

import torch

C, H, W = 64, 16, 16
TEMPLATE_REGION = (slice(3, 7), slice(4, 9))  # rows, cols of the template's structure (cells)
TARGET_REGION = (slice(9, 13), slice(2, 7))  # where the same structure sits in the target


def synthetic_pair(seed: int = 0):
    """Random background features; the structure is the same vector v in both images."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(C, generator=generator)
    template = torch.randn(1, C, H, W, generator=generator)
    target = torch.randn(1, C, H, W, generator=generator)
    template[0, :, TEMPLATE_REGION[0], TEMPLATE_REGION[1]] = v[:, None, None]
    target[0, :, TARGET_REGION[0], TARGET_REGION[1]] = v[:, None, None]
    mask = torch.zeros(1, 1, 4 * H, 4 * W)  # at 4x the feature grid, like an input mask
    mask[..., 4 * 3 : 4 * 7, 4 * 4 : 4 * 9] = 1.0
    return target, template, mask, v


def region_mask(region) -> torch.Tensor:
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[region] = True
    return inside
