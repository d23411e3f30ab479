"""Segmentation metrics of training and of `vessa evaluate`: one Dice, with an explicit rule for
an empty reference.

`dice(predicted, reference, empty)` scores boolean masks `[N, ...]` per sample with MONAI's
`compute_dice`. Where a sample's reference is empty, `empty` decides its score:
- "match": 1 when the prediction is empty too, else 0. An absent structure is a case to get
  right: `vessa evaluate`, stage-1 episodes (target slices without the structure).
- "skip": NaN, so a `nanmean` leaves the sample out. A volume without the structure says
  nothing about how well it is segmented: per-structure Dice of the stage-2 methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vessa.train.data.slices import SliceDataset

EMPTY_REFERENCE = ("match", "skip")


def dice(predicted: torch.Tensor, reference: torch.Tensor, empty: str) -> torch.Tensor:
    """Dice `[N]` of boolean masks `[N, ...]` (any spatial shape), per sample; `empty`: the
    score where the reference is empty ("match" or "skip", module docstring)."""
    from monai.metrics import compute_dice

    if empty not in EMPTY_REFERENCE:
        raise ValueError(f"empty={empty!r}: expected one of {', '.join(EMPTY_REFERENCE)}")
    if predicted.shape != reference.shape:
        raise ValueError(f"mask shapes differ: {tuple(predicted.shape)} vs {tuple(reference.shape)}")
    flat = [mask.reshape(mask.shape[0], 1, -1).bool().float() for mask in (predicted, reference)]
    return compute_dice(*flat, include_background=True, ignore_empty=empty == "skip")[:, 0]


def dice_per_structure(prediction: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Dice `[N, classes-1]` of integer label maps `[N, 1, ...]` per sample and structure (class
    1 to classes-1); NaN where the structure is absent from the reference ("skip")."""
    return torch.stack([dice(prediction == c, labels == c, "skip") for c in range(1, classes)], dim=1)


@torch.no_grad()
def volume_dice(predict: Callable[[torch.Tensor], torch.Tensor], dataset: SliceDataset, classes: int,
                batch_size: int, device: torch.device) -> torch.Tensor:
    """Per-structure Dice `[classes-1]` averaged over the dataset's volumes, each volume scored
    as a whole; `predict` maps images [N,1,S,S] to logits [N,classes,S,S]."""
    scores = []
    for case_index in range(len(dataset.cases)):
        volume = dataset.case_slices(case_index)
        predictions = torch.cat([predict(chunk.to(device)).argmax(1, keepdim=True).cpu()
                                 for chunk in volume["image"].split(batch_size)])
        # [D,1,S,S] slices -> one [1,1,D,S,S] volume, so Dice is per volume, not per slice.
        scores.append(dice_per_structure(predictions.permute(1, 0, 2, 3)[None],
                                         volume["label"].permute(1, 0, 2, 3)[None], classes)[0])
    return torch.nanmean(torch.stack(scores), dim=0)
