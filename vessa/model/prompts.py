"""Similarity maps -> structured sam2 prompts (points, box, dense mask), batched on device.

Given the matcher's similarity S and background similarity [B, 1, h, w] (one cell = one
position of the grid they come on: the stride-16 embedding, or with fine FPN levels the
stride-4 s0 grid), per image and without per-pixel Python loops:
- S is rescaled per image so that its median (the background level, as long as the
  structure covers less than half the slice) maps to 0 and its maximum to 1, clipped to
  [0, 1]; a flat map (e.g. no template foreground) becomes box_threshold everywhere
  (whole-image box, neutral mask prompt). The *region* is {rescaled S >= box_threshold}.
  (Not 0.5 * max S: encoder features share a large common component, so raw cosines
  are high everywhere.)
- positive points: `n_pos` peaks of S inside the region by greedy non-maximum suppression
  (each pick suppresses a (2r+1)^2 window, r = nms_radius embedding cells, i.e.
  16 * nms_radius pixels, in cells of the map's grid);
- box: bounding box of the region's connected component that holds the highest peak
  (found by masked dilation from the peak until it stops growing; 8-connectivity). This
  is the component of the best match, not necessarily the largest one;
- negative points: `n_neg` peaks of the background similarity inside the box grown by r
  cells, outside the region (label -1 = padding when there is no such cell);
- dense prompt: rescaled S resized to 4x the embedding grid (S/4, sam2's mask-input size) and
  mapped piecewise linearly to logits: -scale at 0, 0 at the threshold, +scale at 1.
Point and box coordinates are in input pixels (x, y), as sam2's prompt encoder expects:
cell (row, col) -> centre ((col + 0.5) * stride - 0.5, (row + 0.5) * stride - 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vessa.model.config import MatchingConfig
from vessa.model.matching import rescale_maps

EMBEDDING_STRIDE = 16  # pixels per cell of sam2's image embedding (the top FPN level)


@dataclass
class Prompts:
    """sam2 prompt-encoder inputs for B images.

    point_coords [B, P, 2] (x, y) pixels, point_labels [B, P] int32 (1 positive,
    0 negative, -1 padding), boxes [B, 4] (x0, y0, x1, y1) pixels, mask_logits
    [B, 1, 4h, 4w].
    """

    point_coords: torch.Tensor
    point_labels: torch.Tensor
    boxes: torch.Tensor
    mask_logits: torch.Tensor


class PromptGenerator:
    """Turns similarity maps into `Prompts` (see the module docstring)."""

    def __init__(self, config: MatchingConfig, image_size: int):
        self.config = config
        self.image_size = image_size

    def __call__(self, similarity: torch.Tensor, bg_similarity: torch.Tensor) -> Prompts:
        cfg = self.config
        batch, _, h, w = similarity.shape
        stride = self.image_size / w
        radius = max(1, round(cfg.nms_radius * EMBEDDING_STRIDE / stride))
        norm = rescale_maps(similarity.float(), cfg.box_threshold)
        region = norm >= cfg.box_threshold
        pos_idx, pos_ok = _nms_peaks(norm.masked_fill(~region, float("-inf")), cfg.n_pos, radius)
        component = _component_at(region, pos_idx[:, 0])
        cell_box = _cell_box(component)
        coords = [_cell_centres(pos_idx, w, stride)]
        labels = [torch.where(pos_ok, 1, -1).int()]
        if cfg.n_neg:
            near = _box_mask(_grow(cell_box, radius, h, w), h, w) & ~region
            bg = bg_similarity.float().masked_fill(~near, float("-inf"))
            neg_idx, neg_ok = _nms_peaks(bg, cfg.n_neg, radius)
            coords.append(_cell_centres(neg_idx, w, stride))
            labels.append(torch.where(neg_ok, 0, -1).int())
        boxes = torch.stack(
            [
                cell_box[:, 0] * stride,
                cell_box[:, 1] * stride,
                (cell_box[:, 2] + 1) * stride - 1,
                (cell_box[:, 3] + 1) * stride - 1,
            ],
            dim=1,
        )
        return Prompts(
            point_coords=torch.cat(coords, dim=1),
            point_labels=torch.cat(labels, dim=1),
            boxes=boxes,
            mask_logits=self._mask_logits(norm),
        )

    def _mask_logits(self, norm: torch.Tensor) -> torch.Tensor:
        size = (self.image_size // 4,) * 2
        up = F.interpolate(norm, size=size, mode="bilinear", align_corners=False)
        thr, scale = self.config.box_threshold, self.config.mask_logit_scale
        return torch.where(up >= thr, (up - thr) / (1 - thr), (up - thr) / thr) * scale


def _nms_peaks(score: torch.Tensor, count: int, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS on [B, 1, h, w]: flat indices [B, count] and found flags [B, count]."""
    batch, _, h, w = score.shape
    flat = score.flatten(1).clone()
    rows = torch.arange(h, device=score.device).repeat_interleave(w)
    cols = torch.arange(w, device=score.device).repeat(h)
    picks, found = [], []
    for _ in range(count):
        value, index = flat.max(dim=1)
        picks.append(index)
        found.append(torch.isfinite(value))
        near = ((rows[None] - (index // w)[:, None]).abs() <= radius) & (
            (cols[None] - (index % w)[:, None]).abs() <= radius
        )
        flat = flat.masked_fill(near, float("-inf"))
    return torch.stack(picks, 1), torch.stack(found, 1)


def _component_at(region: torch.Tensor, seed_index: torch.Tensor, steps_per_check: int = 4) -> torch.Tensor:
    """8-connected component of `region` [B, 1, h, w] containing the flat `seed_index` [B]
    (masked dilation from the seed; convergence checked every `steps_per_check` dilations)."""
    component = torch.zeros_like(region, dtype=torch.float32).flatten(1)
    component[torch.arange(region.shape[0], device=region.device), seed_index] = 1.0
    component = component.view_as(region) * region
    inside = region.float()
    for _ in range(0, region.shape[-2] * region.shape[-1], steps_per_check):
        grown = component
        for _ in range(steps_per_check):
            grown = _max3x3(grown) * inside
        if torch.equal(grown, component):
            break
        component = grown
    return component > 0


def _max3x3(maps: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of maps [..., h, w] (edges padded with -inf), separable: on the CPU faster
    than `F.max_pool2d` for single-channel maps."""
    padded = F.pad(maps, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _cell_box(mask: torch.Tensor) -> torch.Tensor:
    """Inclusive (col0, row0, col1, row1) cell box of each mask [B, 1, h, w]; float [B, 4]."""
    h, w = mask.shape[-2:]
    rows = mask.any(dim=-1).squeeze(1)  # [B, h]
    cols = mask.any(dim=-2).squeeze(1)  # [B, w]
    r = torch.arange(h, device=mask.device, dtype=torch.float32)
    c = torch.arange(w, device=mask.device, dtype=torch.float32)
    big = float(max(h, w))
    return torch.stack(
        [
            torch.where(cols, c, big).amin(1),
            torch.where(rows, r, big).amin(1),
            torch.where(cols, c, -1.0).amax(1),
            torch.where(rows, r, -1.0).amax(1),
        ],
        dim=1,
    )


def _grow(box: torch.Tensor, margin: int, h: int, w: int) -> torch.Tensor:
    low = torch.tensor([0.0, 0.0, 0.0, 0.0], device=box.device)
    high = torch.tensor([w - 1.0, h - 1.0, w - 1.0, h - 1.0], device=box.device)
    offset = torch.tensor([-margin, -margin, margin, margin], device=box.device, dtype=box.dtype)
    return torch.minimum(torch.maximum(box + offset, low), high)


def _box_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Cells inside an inclusive cell box [B, 4] -> bool [B, 1, h, w]."""
    r = torch.arange(h, device=box.device).view(1, h, 1)
    c = torch.arange(w, device=box.device).view(1, 1, w)
    inside = (
        (c >= box[:, 0, None, None])
        & (c <= box[:, 2, None, None])
        & (r >= box[:, 1, None, None])
        & (r <= box[:, 3, None, None])
    )
    return inside.unsqueeze(1)


def _cell_centres(index: torch.Tensor, w: int, stride: float) -> torch.Tensor:
    """Flat cell indices [B, P] -> pixel coordinates (x, y) [B, P, 2]."""
    x = (index % w).float()
    y = torch.div(index, w, rounding_mode="floor").float()
    return torch.stack([x, y], dim=-1).add(0.5).mul(stride).sub(0.5)
