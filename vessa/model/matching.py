"""Template matching: target features vs. template foreground/background -> similarity maps.

All features are L2-normalised per cell (cosine similarity). For template k with its mask
area-downsampled to the feature grid (m in [0, 1]):
    p_k        = normalise(sum m * E_k / sum m)             foreground prototype
    S_proto_k  = cos(E_q, p_k)
    S_dense_k  = mean of the top-k cos(E_q(i), E_k(j)) over foreground cells j
                 (cells with m >= 0.5 * max m, so tiny structures keep at least one cell)
    S          = mean over templates with foreground of (S_proto_k + S_dense_k) / 2
and the background similarity is cos(E_q, background prototype) with weights 1 - m.
Shapes: target [B, C, h, w], templates [B, K, C, h, w], masks [B, K, 1, H, W] (any H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MatchResult:
    """similarity / bg_similarity [B, 1, h, w] in [-1, 1]; prototype [B, C] (unit norm or 0);
    valid [B, K]: the template has foreground on this slice."""

    similarity: torch.Tensor
    bg_similarity: torch.Tensor
    prototype: torch.Tensor
    valid: torch.Tensor


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area (fraction-covered) downsampling of masks [..., H, W] -> [..., *size], float."""
    lead = mask.shape[:-2]
    small = F.adaptive_avg_pool2d(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size)
    return small.reshape(*lead, *size)


class MaskedFeatureMatcher(nn.Module):
    """Prototype + dense top-k matching of target cells against template foreground."""

    def __init__(self, top_k: int = 5):
        super().__init__()
        self.top_k = top_k

    def forward(self, target: torch.Tensor, templates: torch.Tensor, masks: torch.Tensor) -> MatchResult:
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
        return MatchResult(
            similarity=similarity.view(batch, 1, h, w),
            bg_similarity=bg_similarity.view(batch, 1, h, w),
            prototype=prototype,
            valid=valid,
        )

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


def _prototype(keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unit-norm weighted mean feature [B, K, C] (zero where the weights are all 0)."""
    total = weights.sum(-1, keepdim=True).clamp(min=1e-6)
    return F.normalize(torch.einsum("bkcn,bkn->bkc", keys, weights) / total, dim=-1)


def _mean_over(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 (templates) of `values` [B, K, ...] where `valid` [B, K]."""
    weight = valid.to(values.dtype).view(*valid.shape, *([1] * (values.ndim - 2)))
    return (values * weight).sum(1) / weight.sum(1).clamp(min=1)
