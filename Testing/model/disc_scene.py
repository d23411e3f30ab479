"""A known-answer scene for SAM-style models: a bright disc on noise, and the box around it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vessa.model.minisam import MiniSam


@dataclass(frozen=True)
class DiscScene:
    """image [1,3,S,S] uint8, mask [S,S] bool (the disc), box [1,4] (x0, y0, x1, y1) around it."""

    image: torch.Tensor
    mask: torch.Tensor
    box: torch.Tensor


def disc_scene(size: int, seed: int = 0) -> DiscScene:
    """Grey noise in 0..119 with a disc of radius 0.16 * size in 200..239, off centre; box margin 8 px."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx, radius = 0.45 * size, 0.55 * size, 0.16 * size
    mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    image = torch.randint(0, 120, (1, 3, size, size), generator=generator)
    image[:, :, mask] = torch.randint(200, 240, (1, 3, int(mask.sum())), generator=generator)
    box = torch.tensor([[cx - radius - 8, cy - radius - 8, cx + radius + 8, cy + radius + 8]])
    return DiscScene(image.to(torch.uint8), mask, box)


def box_mask_iou(model: MiniSam, embedding: torch.Tensor, scene: DiscScene) -> float:
    """IoU with the disc of the box prompt's best mask (highest predicted IoU), low-res logits
    upsampled bilinearly to the image and thresholded at 0."""
    with torch.no_grad():
        logits, iou = model.decode(embedding, boxes=scene.box)
    best = logits[:, iou[0].argmax()][:, None]
    predicted = F.interpolate(best, scene.mask.shape, mode="bilinear", align_corners=False)[0, 0] > 0
    return ((predicted & scene.mask).sum() / (predicted | scene.mask).sum()).item()
