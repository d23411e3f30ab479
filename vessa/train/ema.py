"""Exponential moving average (EMA) teacher update, as in UniMatch V2 and Mean Teacher."""

from __future__ import annotations

import torch
from torch import nn


def ema_momentum(step: int, max_momentum: float) -> float:
    """UniMatch V2's momentum: min(1 - 1/(step+1), max_momentum); 0 at step 0 (teacher = student)."""
    return min(1.0 - 1.0 / (step + 1), max_momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, max_momentum: float) -> float:
    """teacher <- m*teacher + (1-m)*student on parameters AND floating buffers; returns m.

    Integer buffers (BatchNorm's num_batches_tracked) are copied. `step` is the 0-based index
    of the optimiser step just taken. The two modules must have the same structure.
    """
    if not 0.0 <= max_momentum < 1.0:
        raise ValueError(f"max_momentum must be in [0, 1), got {max_momentum}")
    momentum = ema_momentum(step, max_momentum)
    pairs = [*zip(teacher.named_parameters(), student.named_parameters(), strict=True),
             *zip(teacher.named_buffers(), student.named_buffers(), strict=True)]
    for (t_name, t_value), (s_name, s_value) in pairs:
        if t_name != s_name or t_value.shape != s_value.shape:
            raise ValueError(f"teacher and student differ: {t_name} {tuple(t_value.shape)} vs "
                             f"{s_name} {tuple(s_value.shape)}")
        if t_value.is_floating_point():
            t_value.mul_(momentum).add_(s_value.detach(), alpha=1.0 - momentum)
        else:
            t_value.copy_(s_value)
    return momentum
