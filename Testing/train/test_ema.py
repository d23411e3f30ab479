"""ema_update: UniMatch V2's momentum schedule on parameters and buffers, with hand-computed numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vessa.train.ema import ema_momentum, ema_update


class Tiny(nn.Module):
    def __init__(self, weight: float, running: float, tracked: int):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([weight, 2 * weight]))
        self.register_buffer("running_mean", torch.tensor([running]))
        self.register_buffer("num_batches_tracked", torch.tensor(tracked))


@pytest.mark.parametrize(("step", "max_momentum", "expected"), [
    (0, 0.996, 0.0),        # first step: the teacher becomes the student
    (1, 0.996, 0.5),
    (3, 0.996, 0.75),
    (9, 0.5, 0.5),          # capped
    (10_000, 0.996, 0.996),
])
def test_momentum_schedule(step, max_momentum, expected):
    assert ema_momentum(step, max_momentum) == pytest.approx(expected)


def test_update_known_numbers_on_parameters_and_buffers():
    teacher, student = Tiny(1.0, 10.0, 5), Tiny(3.0, 20.0, 7)
    momentum = ema_update(teacher, student, step=3, max_momentum=0.996)  # m = 0.75
    assert momentum == 0.75
    assert teacher.weight.tolist() == [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6]  # [1.5, 3.0]
    assert teacher.running_mean.tolist() == [0.75 * 10 + 0.25 * 20]                # buffers too
    assert teacher.num_batches_tracked.item() == 7                                 # integer: copied
    assert teacher.num_batches_tracked.dtype == torch.int64
    assert student.weight.tolist() == [3.0, 6.0]                                   # student untouched


def test_step_zero_copies_the_student_and_needs_no_grad():
    teacher, student = Tiny(1.0, 10.0, 0), Tiny(3.0, 20.0, 2)
    (student.weight * 2).sum().backward()
    ema_update(teacher, student, step=0, max_momentum=0.99)
    assert teacher.weight.tolist() == [3.0, 6.0] and teacher.running_mean.tolist() == [20.0]
    assert teacher.weight.grad is None


def test_repeated_updates_converge_to_a_fixed_student():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    for step in range(1, 200):
        ema_update(teacher, student, step, max_momentum=0.9)
    torch.testing.assert_close(teacher.weight, student.weight)


def test_mismatched_models_and_bad_momentum_raise():
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(3, 2), nn.Linear(3, 4), step=1, max_momentum=0.9)
    with pytest.raises(ValueError, match="max_momentum"):
        ema_update(nn.Linear(3, 2), nn.Linear(3, 2), step=1, max_momentum=1.0)
