"""AdamW over an objective's parameter groups, and the learning-rate schedule (warmup + poly/cosine)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

POLY_POWER = 0.9  # UniMatch V1/V2 and nnU-Net


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """The multiplier of the base lr for 0-based `step`: linear warmup, then poly 0.9, cosine or constant."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if kind == "poly":
        return (1.0 - progress) ** POLY_POWER
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule must be poly, cosine or constant, got {kind!r}")


def build_optimizer(groups: Iterable[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over `groups`; a group's `lr_scale` (default 1) multiplies `lr`, `weight_decay` may be overridden."""
    param_groups = []
    for group in groups:
        group = dict(group)
        group["lr"] = lr * group.pop("lr_scale", 1.0)
        group.setdefault("weight_decay", weight_decay)
        group["params"] = [p for p in group["params"] if p.requires_grad]
        param_groups.append(group)
    # foreach: one vectorised update per group instead of a Python loop over tensors (the
    # default on CPU), faster there for models with many small tensors (sam2).
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int, kind: str) -> LambdaLR:
    """A per-step LambdaLR applying `lr_factor` to every group's lr."""
    lr_factor(0, total, warmup, kind)  # reject an unknown kind now rather than at the first step
    return LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, kind))
