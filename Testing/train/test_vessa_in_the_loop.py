"""VESSA in the loop: pseudo-label fusion and its weight schedule, known answers on tiny tensors."""

import pytest
import torch

from vessa.errors import InputError
from vessa.train.vessa_labels import fuse_pseudo_labels, vessa_weight


def test_fuse_pseudo_labels_renormalises_vessa_background():
    teacher = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]
    vessa = torch.tensor([0.5, 0.5])[None, :, None, None]
    fused = fuse_pseudo_labels(teacher, vessa, w=1.0)
    assert torch.allclose(fused.flatten(), torch.tensor([0.2, 0.4, 0.4]))  # bg 0.25, sum 1.25
    fused = fuse_pseudo_labels(teacher, vessa, w=0.5)
    assert torch.allclose(fused.flatten(), torch.tensor([0.6, 0.2, 0.2]))
    assert torch.equal(fuse_pseudo_labels(teacher, vessa, w=0.0), teacher)
    with pytest.raises(InputError, match="background"):
        fuse_pseudo_labels(teacher, torch.zeros(1, 3, 1, 1), 0.5)


@pytest.mark.parametrize(
    ("step", "total", "expected"), [(0, 100, 1.0), (50, 100, 0.65), (100, 100, 0.3), (500, 100, 0.3)]
)
def test_vessa_weight_cosine(step, total, expected):
    assert vessa_weight(step, total) == pytest.approx(expected)
