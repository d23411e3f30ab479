"""Template matching: target features vs. template foreground/background -> similarity maps.

All features are L2-normalised per cell (cosine similarity). For template k with its mask
area-downsampled to the feature grid (m in [0, 1]):
    p_k        = normalise(sum m * E_k / sum m)             foreground prototype
    S_proto_k  = cos(E_q, p_k)
    S_dense_k  = mean of the top-k cos(E_q(i), E_k(j)) over foreground cells j
                 (cells with m >= 0.5 * max m, so tiny structures keep at least one cell)
    S          = mean over templates with foreground of (S_proto_k + S_dense_k) / 2
and the background similarity is cos(E_q, background prototype) with weights 1 - m.
Finer FPN levels (`fine` in `forward`: sam2's s1 at stride 8, s0 at stride 4) are matched by
their masked prototypes alone, S_l = cos(F_q^l, p_k^l) (prototypes from `masked_prototypes`,
computed once per template slice). With fine levels, each level's map (and the embedding's S)
is rescaled per image (median -> 0, max -> 1, `rescale_maps`), upsampled to the finest grid
and averaged: the similarity then lies in [0, 1] on that grid (one 4-px cell for s0 instead
of one 16-px cell), which is what the prompts are cut from.
Shapes: target [B, C, h, w], templates [B, K, C, h, w], masks [B, K, 1, H, W] (any H, W);
fine level l: target [B, C_l, h_l, w_l], prototypes [B, K, 2, C_l] (foreground, background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MatchResult:
    """similarity / bg_similarity [B, 1, h, w]: cosines in [-1, 1], or with fine levels the
    fused map in [0, 1] on the finest level's grid; prototype [B, C] (embedding level, unit
    norm or 0); valid [B, K]: the template has foreground on this slice."""

    similarity: torch.Tensor
    bg_similarity: torch.Tensor
    prototype: torch.Tensor
    valid: torch.Tensor


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area (fraction-covered) downsampling of masks [..., H, W] -> [..., *size], float."""
    lead = mask.shape[:-2]
    small = F.adaptive_avg_pool2d(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size)
    return small.reshape(*lead, *size)


def masked_prototypes(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Foreground and background prototypes of template features [N, C, h, w] under their masks
    [N, 1, H, W] (area-downsampled): [N, 2, C], unit norm, 0 where a side has no weight."""
    keys = F.normalize(features.float().flatten(2), dim=1)[:, None]  # [N, 1, C, n]
    fg = downsample_mask(masks, features.shape[-2:]).flatten(1)[:, None]  # [N, 1, n]
    return torch.cat([_prototype(keys, fg), _prototype(keys, 1.0 - fg)], dim=1)


def rescale_maps(maps: torch.Tensor, constant_value: float = 0.0) -> torch.Tensor:
    """Per map [..., h, w]: median -> 0, max -> 1, clipped to [0, 1]; a flat map becomes
    `constant_value`. (Encoder features share a large common component, so raw cosines are
    high everywhere; the median is the background level while the structure covers less
    than half of the slice.)"""
    low = maps.flatten(-2).median(dim=-1).values[..., None, None]
    spread = maps.amax(dim=(-2, -1), keepdim=True) - low
    scaled = ((maps - low) / spread.clamp(min=1e-6)).clamp(0.0, 1.0)
    return torch.where(spread > 1e-6, scaled, constant_value)


class MaskedFeatureMatcher(nn.Module):
    """Prototype + dense top-k matching of target cells against template foreground, plus
    prototype matching on finer FPN levels (see the module docstring)."""

    def __init__(self, top_k: int = 5):
        super().__init__()
        self.top_k = top_k

    def forward(
        self,
        target: torch.Tensor,
        templates: torch.Tensor,
        masks: torch.Tensor,
        fine: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    ) -> MatchResult:
        batch, count, channels, h, w = templates.shape
        if target.shape != (batch, channels, h, w) or masks.shape[:3] != (batch, count, 1):
            raise ValueError(
                f"matcher: target {list(target.shape)}, templates {list(templates.shape)} and "
                f"masks {list(masks.shape)} do not fit [B,C,h,w] / [B,K,C,h,w] / [B,K,1,H,W]"
            )
        query = F.normalize(target.float().flatten(2), dim=1)  # [B, C, n]
        keys = F.normalize(templates.float().flatten(3), dim=2)  # [B, K, C, n]
        fg = downsample_mask(masks, (h, w)).flatten(2)  # [B, K, n]
        valid = fg.sum(-1) > 0
        fg_proto = _prototype(keys, fg)
        bg_proto = _prototype(keys, 1.0 - fg)
        proto_sim = torch.einsum("bkc,bcn->bkn", fg_proto, query)
        dense_sim = self._dense(query, keys, fg)
        similarity = _mean_over(0.5 * (proto_sim + dense_sim), valid)
        bg_valid = (1.0 - fg).sum(-1) > 0
        bg_similarity = _mean_over(torch.einsum("bkc,bcn->bkn", bg_proto, query), bg_valid)
        prototype = _mean_over(fg_proto, valid)  # [B, C]
        similarity, bg_similarity = similarity.view(batch, 1, h, w), bg_similarity.view(batch, 1, h, w)
        if fine:
            levels = [(similarity, bg_similarity)] + [_prototype_maps(f, p, valid) for f, p in fine]
            similarity, bg_similarity = (_fuse([level[side] for level in levels]) for side in (0, 1))
        return MatchResult(similarity=similarity, bg_similarity=bg_similarity, prototype=prototype, valid=valid)

    def _dense(self, query: torch.Tensor, keys: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
        """Mean of the top-k cosines to foreground cells: [B, K, n]."""
        is_fg = (fg >= 0.5 * fg.amax(-1, keepdim=True)) & (fg > 0)
        cells = max(int(is_fg.sum(-1).max()), 1)
        order = torch.argsort(fg, dim=-1, descending=True)[..., :cells]  # foreground first
        chosen_valid = torch.gather(is_fg, -1, order)  # [B, K, M]
        chosen = torch.gather(keys, 3, order.unsqueeze(2).expand(-1, -1, keys.shape[2], -1))
        cos = torch.einsum("bcn,bkcm->bknm", query, chosen)
        cos = cos.masked_fill(~chosen_valid.unsqueeze(2), float("-inf"))
        top = cos.topk(min(self.top_k, cells), dim=-1).values
        finite = torch.isfinite(top)
        return torch.where(finite, top, 0.0).sum(-1) / finite.sum(-1).clamp(min=1)


def _prototype_maps(
    target: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine maps [B, 1, h, w] of target features [B, C, h, w] to the foreground and the
    background prototypes [B, K, 2, C], averaged over the valid templates [B, K]."""
    batch, _, h, w = target.shape
    query = F.normalize(target.float().flatten(2), dim=1)
    cos = torch.einsum("bksc,bcn->bksn", prototypes.float(), query)
    bg_valid = prototypes[:, :, 1].abs().sum(-1) > 0
    return (_mean_over(cos[:, :, 0], valid).view(batch, 1, h, w),
            _mean_over(cos[:, :, 1], bg_valid).view(batch, 1, h, w))


def _fuse(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean of per-image rescaled maps [B, 1, h_l, w_l], on the finest grid among them."""
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return torch.stack([
        F.interpolate(rescale_maps(m), size=size, mode="bilinear", align_corners=False) for m in maps
    ]).mean(0)


def _prototype(keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unit-norm weighted mean feature [B, K, C] (zero where the weights are all 0)."""
    total = weights.sum(-1, keepdim=True).clamp(min=1e-6)
    return F.normalize(torch.einsum("bkcn,bkn->bkc", keys, weights) / total, dim=-1)


def _mean_over(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 (templates) of `values` [B, K, ...] where `valid` [B, K]."""
    weight = valid.to(values.dtype).view(*valid.shape, *([1] * (values.ndim - 2)))
    return (values * weight).sum(1) / weight.sum(1).clamp(min=1)
