"""Dice and 95th-percentile Hausdorff distance of segmentations (MONAI metrics; `vessa evaluate`)."""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vessa.errors import InputError
from vessa.io import Segmentation
from vessa.io.atomic import atomic_paths


@dataclass
class Score:
    """One structure of one case: Dice, HD95 in mm (inf when one mask is empty), voxel counts."""

    case: str
    structure: str
    dice: float
    hd95_mm: float
    predicted_voxels: int
    reference_voxels: int


def score_masks(predicted: np.ndarray, reference: np.ndarray, spacing_kji) -> tuple[float, float]:
    """Dice and HD95 (mm) of two boolean (k, j, i) masks on the same grid; an empty reference
    scores Dice 1 with an empty prediction, else 0 (`vessa.train.metrics`, "match")."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    from vessa.train.metrics import dice as dice_score

    if predicted.shape != reference.shape:
        raise InputError(f"mask shapes differ: {predicted.shape} vs {reference.shape}")
    pred = torch.from_numpy(np.ascontiguousarray(predicted, bool))[None, None].float()
    ref = torch.from_numpy(np.ascontiguousarray(reference, bool))[None, None].float()
    dice = float(dice_score(pred[0], ref[0], empty="match")[0])
    if not predicted.any() or not reference.any():
        return dice, math.inf
    with warnings.catch_warnings():
        # MONAI's own call passes its deprecated `always_return_as_numpy` (MONAI 1.5-1.6): not ours to fix
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                        spacing=[float(s) for s in spacing_kji])
    return dice, float(hd[0, 0])


def score_segmentations(case: str, predicted: Segmentation, reference: Segmentation,
                        structures: list[str] | None = None) -> list[Score]:
    """Scores for each structure (default: every reference segment) of one case."""
    grid = reference.geometry()
    grid.require_same_grid(predicted.geometry(), f"{case}: predicted segmentation", this="the reference")
    scores = []
    for name in structures or reference.names():
        ref, pred = reference.get(name).mask, predicted.get(name).mask
        dice, hd95 = score_masks(pred, ref, grid.spacing[::-1])
        scores.append(Score(case, name, dice, hd95, int(pred.sum()), int(ref.sum())))
    return scores


def write_scores(scores: list[Score], csv_path: str | Path | None, plot_path: str | Path | None = None) -> None:
    """Write the scores as CSV and/or a Dice bar plot per structure, as one set (both or neither)."""
    outputs = [path for path in (csv_path, plot_path) if path]
    with atomic_paths(outputs) as temporaries:
        written = dict(zip(outputs, temporaries, strict=True))
        if csv_path:
            with open(written[csv_path], "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(asdict(scores[0])))
                writer.writeheader()
                writer.writerows(asdict(score) for score in scores)
        if plot_path:
            _plot_dice(scores, written[plot_path])


def _plot_dice(scores: list[Score], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s.case}\n{s.structure}" for s in scores]
    figure, axis = plt.subplots(figsize=(max(4, len(scores) * 0.8), 3.5))
    axis.bar(range(len(scores)), [s.dice for s in scores], color="#3b7dd8")
    axis.set_xticks(range(len(scores)), labels, rotation=45, ha="right", fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_ylabel("Dice")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120, format="png")
    finally:
        plt.close(figure)
