"""Augmentation of training batches: views of images and labels, CutMix, feature dropout masks,
and student-like mask prompts.

Every function works on batches of 2D slices `[B, C, H, W]` (images scaled to [0, 1]) on any
device. The semi-supervised views (`weak_augment`, `strong_augment`, CutMix,
`complementary_channel_masks`) draw from an explicit CPU `torch.Generator`, so a run is
reproducible from its seed; shapes and defaults follow docs/methods.md §3 (UniMatch V2
`unimatch_v2.py`, UniMatch V1 `more-scenarios/medical`). `random_flips` (supervised method) and
the feedback-rehearsal prompts `corrupt_masks` / `error_clicks` (stage 1, docs/methods.md §1.2) draw
from the global torch RNG, which checkpoints restore.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from vessa.errors import InputError


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _chance(p: float, generator: torch.Generator | None) -> bool:
    return torch.rand((), generator=generator).item() < p


def cutmix_box(
    size: tuple[int, int],
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A CutMix box as a bool mask `[H, W]`: empty with probability 1 - p, else a rectangle
    covering `area` (fraction of the image) with aspect h/w in `ratio`, placed uniformly.

    As UniMatch's `obtain_cutmix_box`, the aspect is redrawn until the box fits the image.
    """
    height, width = size
    mask = torch.zeros(height, width, dtype=torch.bool)
    if not _chance(p, generator):
        return mask
    box_area = _uniform(*area, generator) * height * width
    while True:
        aspect = _uniform(*ratio, generator)
        box_w, box_h = int(math.sqrt(box_area / aspect)), int(math.sqrt(box_area * aspect))
        if box_w <= width and box_h <= height:
            break
    x = int(torch.randint(0, width - box_w + 1, (), generator=generator))
    y = int(torch.randint(0, height - box_h + 1, (), generator=generator))
    mask[y : y + box_h, x : x + box_w] = True
    return mask


def cutmix_boxes(
    batch: int, size: tuple[int, int], p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One independent `cutmix_box` per image: bool `[B, H, W]`."""
    return torch.stack([cutmix_box(size, p, generator=generator) for _ in range(batch)])


def mix_in_batch(boxes: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """In-batch CutMix: inside `boxes[b]`, sample b takes the values of sample B-1-b (`flip(0)`).

    `tensors` are `[B, H, W]` (labels, confidences, ignore masks) or `[B, C, H, W]` (images);
    mixing images and their pseudo-labels with the same boxes keeps them aligned.
    """
    mixed = []
    for tensor in tensors:
        box = boxes.to(tensor.device)
        if tensor.dim() == 4:
            box = box[:, None].expand_as(tensor)
        elif tensor.shape != box.shape:
            raise InputError(f"CutMix: tensor of shape {tuple(tensor.shape)} does not match boxes {tuple(boxes.shape)}")
        mixed.append(torch.where(box, tensor.flip(0), tensor))
    return tuple(mixed)


def complementary_channel_masks(
    batch: int, channels: int, p_no_drop: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """UniMatch V2 complementary dropout for `batch` pairs of strong views of the same images.

    M1 = 2·Bernoulli(0.5) per (pair, channel), M2 = 2 − M1, so the two views keep disjoint
    channel sets (each scaled by 2); `int(batch·p_no_drop)` random pairs get no dropout (all 1).
    Returns `(m1, m2)`, each float `[batch, channels]`.
    """
    m1 = torch.bernoulli(torch.full((batch, channels), 0.5), generator=generator) * 2.0
    m2 = 2.0 - m1
    kept = torch.randperm(batch, generator=generator)[: int(batch * p_no_drop)]
    m1[kept] = 1.0
    m2[kept] = 1.0
    return m1, m2


def weak_augment(
    image: torch.Tensor,
    label: torch.Tensor | None = None,
    max_degrees: float = 20.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Geometric augmentation of images `[B, C, H, W]` and labels `[B, H, W]` together (UniMatch
    V1 medical): per sample, with p 0.5 a random rot90 and flip, else with p 0.5 a rotation in
    ±`max_degrees` (bilinear image, nearest label, zero padding), else unchanged.
    Square slices are required for rot90 (H == W)."""
    if image.shape[-1] != image.shape[-2]:
        raise InputError(f"weak_augment: slices must be square, got {tuple(image.shape[-2:])}")
    images, labels = [], []
    for b in range(image.shape[0]):
        x = image[b : b + 1]
        y = None if label is None else label[b : b + 1, None].float()
        if _chance(0.5, generator):
            k = int(torch.randint(0, 4, (), generator=generator))
            dim = -1 - int(torch.randint(0, 2, (), generator=generator))
            x = x.rot90(k, (-2, -1)).flip(dim)
            y = None if y is None else y.rot90(k, (-2, -1)).flip(dim)
        elif _chance(0.5, generator):
            angle = math.radians(_uniform(-max_degrees, max_degrees, generator))
            theta = torch.tensor(
                [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]],
                dtype=x.dtype,
                device=x.device,
            )[None]
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if y is not None:
                y = F.grid_sample(y, grid.to(y.dtype), mode="nearest", padding_mode="zeros", align_corners=False)
        images.append(x)
        labels.append(y)
    out_label = None if label is None else torch.cat(labels)[:, 0].to(label.dtype)
    return torch.cat(images), out_label


def strong_augment(
    image: torch.Tensor,
    jitter: float = 0.5,
    p_jitter: float = 0.8,
    p_blur: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    p_noise: float = 0.5,
    noise_std: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Photometric augmentation of images `[B, C, H, W]` in [0, 1], per sample: with p_jitter,
    brightness, contrast and gamma factors in [1 − jitter, 1 + jitter] (ColorJitter for one
    channel); with p_blur, a Gaussian blur with σ in `sigma` (pixels); with p_noise, Gaussian
    noise of std up to `noise_std`. Geometry is unchanged, so pseudo-labels stay aligned."""
    out = []
    for b in range(image.shape[0]):
        x = image[b]
        if _chance(p_jitter, generator):
            x = TF.adjust_brightness(x, _uniform(1 - jitter, 1 + jitter, generator))
            x = TF.adjust_contrast(x, _uniform(1 - jitter, 1 + jitter, generator))
            x = TF.adjust_gamma(x.clamp(0, 1), _uniform(1 - jitter, 1 + jitter, generator))
        if _chance(p_blur, generator):
            s = _uniform(*sigma, generator)
            kernel = 2 * math.ceil(3 * s) + 1
            x = TF.gaussian_blur(x, [kernel, kernel], [s, s])
        if _chance(p_noise, generator):
            std = _uniform(0.0, noise_std, generator)
            x = x + std * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        out.append(x)
    return torch.stack(out)


def random_flips(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample left-right and/or up-down with probability 0.5 each (global torch RNG)."""
    flips = (torch.rand(images.shape[0], 2) < 0.5).to(images.device)
    for axis, flip in zip((-1, -2), flips.T, strict=True):
        where = flip.view(-1, 1, 1, 1)
        images = torch.where(where, images.flip(axis), images)
        labels = torch.where(where, labels.flip(axis), labels)
    return images, labels


def corrupt_masks(masks: torch.Tensor, generator: torch.Generator | None = None, max_radius: int = 5,
                  drop_probability: float = 0.3) -> torch.Tensor:
    """Student-like errors on masks [B, 1, H, W]: per sample a random dilation or erosion of
    1..max_radius px, and with `drop_probability` a random square hole cut out of it."""
    out = []
    for mask in masks.float():
        radius = int(torch.randint(1, max_radius + 1, (1,), generator=generator))
        kernel = 2 * radius + 1
        if torch.rand((), generator=generator) < 0.5:
            changed = F.max_pool2d(mask[None], kernel, stride=1, padding=radius)[0]
        else:
            changed = -F.max_pool2d(-mask[None], kernel, stride=1, padding=radius)[0]
        if torch.rand((), generator=generator) < drop_probability:
            h, w = mask.shape[-2:]
            side = int(torch.randint(max(2, h // 16), max(3, h // 4), (1,), generator=generator))
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            changed = changed.clone()
            changed[..., top:top + side, left:left + side] = 0
        out.append(changed)
    return torch.stack(out)


def error_clicks(prompt: torch.Tensor, target: torch.Tensor, count: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` corrective clicks per sample, drawn uniformly from the error region of a
    mask prompt [B, 1, H, W] vs target: a missed pixel gives a positive click (label 1), a
    false one a negative click (0). Returns coords [B, count, 2] (x, y in pixels, centres)
    and labels [B, count]; label -1 (sam2's "ignore") pads samples without errors."""
    batch, _, h, w = target.shape
    missed = (target > 0.5) & (prompt <= 0.5)
    false = (target <= 0.5) & (prompt > 0.5)
    errors = (missed | false).flatten(1).float()  # [B, H*W]
    has_error = errors.sum(1) > 0
    weights = torch.where(has_error[:, None], errors, torch.ones_like(errors))
    index = torch.multinomial(weights, count, replacement=True, generator=generator)  # [B, count]
    coords = torch.stack([(index % w).float() + 0.5, (index // w).float() + 0.5], dim=-1)
    labels = missed.flatten(1).gather(1, index).long()
    labels = torch.where(has_error[:, None], labels, torch.full_like(labels, -1))
    return coords, labels
