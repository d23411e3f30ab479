"""Learning-rate schedule and AdamW parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vessa.train.optim import build_optimizer, build_scheduler, lr_factor


@pytest.mark.parametrize(("step", "kind", "expected"), [
    (0, "poly", 1 / 4), (3, "poly", 1.0),                   # warmup 4: (step+1)/4
    (4, "poly", 1.0), (9, "poly", 0.5 ** 0.9), (14, "poly", 0.0),
    (4, "cosine", 1.0), (9, "cosine", 0.5), (14, "cosine", 0.0),
    (9, "constant", 1.0), (20, "poly", 0.0),                 # past the end stays at 0
])
def test_lr_factor_table(step, kind, expected):
    # total 14, warmup 4: after warmup, progress = (step - 4) / 10
    assert lr_factor(step, total=14, warmup=4, kind=kind) == pytest.approx(expected, abs=1e-12)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="poly, cosine or constant"):
        lr_factor(0, 10, 0, "step")


def test_groups_scale_the_base_lr_and_the_scheduler_follows_the_factor():
    backbone, head = nn.Linear(2, 2), nn.Linear(2, 1)
    head.bias.requires_grad_(False)
    optimizer = build_optimizer([{"params": backbone.parameters(), "lr_scale": 0.1},
                                 {"params": head.parameters(), "weight_decay": 0.0}], lr=1e-3, weight_decay=0.05)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert len(optimizer.param_groups[1]["params"]) == 1  # frozen parameters are left out
    scheduler = build_scheduler(optimizer, total=10, warmup=0, kind="cosine")
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert isinstance(optimizer, torch.optim.AdamW)
