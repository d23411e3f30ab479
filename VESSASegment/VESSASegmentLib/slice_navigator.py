"""SliceNavigator: "Next slice to check" - the preview's slices from the least confident up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .segment_request import TaskResult


@dataclass
class SliceStop:
    """A slice to look at: array axis (0 = k, 1 = j, 2 = i) and index on the source grid, the
    model's confidence there, and the RAS point to centre the views on."""

    axis: int
    index: int
    confidence: float
    ras: np.ndarray


class SliceNavigator:
    """Orders the slices that hold part of the preview by the model's confidence (lowest first;
    predicted IoU x presence probability) and steps through them, wrapping around. Slices
    without any preview voxel are skipped unless the preview is empty everywhere (a slice where
    the structure is absent has a low score by construction, so it says nothing about errors).
    With several results (batch), a slice's confidence is the lowest of them. For a drawn-slice
    completion, the slices the user drew are never suggested and the completer's `nextSlice`
    (the most uncertain undrawn slice) comes first.
    """

    def __init__(self, results: list[TaskResult], threshold: float):
        self.grid = results[0].sourceProbability
        self.axis = results[0].axis
        mine = [r for r in results if r.axis == self.axis]
        self.confidence = np.min([np.asarray(r.sliceConfidence, dtype=float) for r in mine], axis=0)
        self.mask = np.any([r.sourceProbability.array >= threshold for r in mine], axis=0)
        others = tuple(a for a in range(3) if a != self.axis)
        present = np.flatnonzero(self.mask.any(axis=others))
        candidates = present if present.size else np.arange(len(self.confidence))
        completions = [r.completion for r in mine if r.completion is not None]
        if completions:
            candidates = np.setdiff1d(candidates, np.concatenate([c.drawn for c in completions]))
        first = [c.nextSlice for c in completions if c.nextSlice is not None]
        rest = candidates[~np.isin(candidates, first)]
        self.order = np.concatenate([first, rest[np.argsort(self.confidence[rest], kind="stable")]]).astype(int)
        if not len(self.order):  # every slice drawn: nothing to check
            self.order = np.arange(len(self.confidence))
        self._position = 0

    def next(self) -> SliceStop:
        """The next slice to check (the least confident first, then the following ones)."""
        index = int(self.order[self._position % len(self.order)])
        self._position += 1
        inSlice = np.take(self.mask, index, axis=self.axis)
        centre = np.array(self.grid.shape, dtype=float) / 2 - 0.5
        others = [a for a in range(3) if a != self.axis]
        if inSlice.any():
            centre[others] = [coordinates.mean() for coordinates in np.nonzero(inSlice)]
        centre[self.axis] = index
        ijk = np.append(centre[::-1], 1.0)  # (k, j, i) -> (i, j, k, 1)
        ras = (self.grid.ijk_to_ras() @ ijk)[:3]
        return SliceStop(self.axis, index, float(self.confidence[index]), ras)
