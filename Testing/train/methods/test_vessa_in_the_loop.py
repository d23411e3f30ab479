"""VESSA in the loop: pseudo-label fusion and its schedule (known answers), the template bank, the
teacher-derived prompts and the refiner's map cache."""

import pytest
import torch
from torch import nn

from vessa.errors import InputError, JobError
from vessa.train.data.cohort import load_cohort
from vessa.train.data.slices import SliceDataset
from vessa.train.methods.vessa_in_the_loop import VessaRefiner, fuse_pseudo_labels, template_bank, vessa_weight


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


def test_template_bank_holds_slices_of_each_structure(tiny_cohort):
    cohort = load_cohort(tiny_cohort, ["blob", "ring"])
    dataset = SliceDataset(cohort, cohort.select("train", labelled=True), ["blob", "ring"], 32)
    bank = template_bank(dataset, classes=3, per_class=3)
    assert set(bank) == {1, 2}
    for _c, (images, masks) in bank.items():
        assert images.shape == masks.shape == (3, 1, 32, 32)
        assert (masks.flatten(1).sum(1) >= 16).all()
    with pytest.raises(JobError, match="covers fewer than"):
        template_bank(dataset, classes=3, per_class=3, min_pixels=10_000)


def test_vessa_prompts_come_from_the_teacher_prediction(assistant, tiny_cohort):
    bank = {1: (torch.rand(2, 1, 32, 32), torch.ones(2, 1, 32, 32))}
    refiner = VessaRefiner(assistant, bank, ["blob"], torch.device("cpu"))
    probs = torch.zeros(2, 2, 32, 32)
    probs[:, 0] = 1.0
    probs[0, :, 8:16, 4:20] = torch.tensor([0.1, 0.9])[:, None, None]
    probs[0, 1, 10, 6] = 0.99  # most confident blob pixel
    probs[0, 0, 9, 19], probs[0, 1, 9, 19] = 0.8, 0.2  # most confident background inside the box
    mask, (coords, labels) = refiner._prompts(probs, 1)
    scale = 128 / 32
    assert labels.tolist() == [[1, 0, 2, 3], [-1, -1, -1, -1]]
    expected = torch.tensor([[6, 10], [19, 9], [4, 8], [19, 15]], dtype=torch.float32)
    assert torch.allclose(coords[0], (expected + 0.5) * scale - 0.5)
    assert mask.shape == (2, 1, 32, 32) and mask.max() == pytest.approx(torch.logit(torch.tensor(0.99)).item(), 1e-4)
    assert mask.min() == -10.0


def test_vessa_refiner_runs_the_assistant_and_caches_maps(assistant, tiny_cohort):
    cohort = load_cohort(tiny_cohort, ["blob", "ring"])
    dataset = SliceDataset(cohort, cohort.select("train", labelled=True), ["blob", "ring"], 32)
    refiner = VessaRefiner(assistant, template_bank(dataset, 3, 2), ["blob", "ring"], torch.device("cpu"),
                           templates=2, refresh_every=2, per_step=2)
    assert refiner.memories[1].memory.shape[0] == 2
    images = dataset.case_slices(0)["image"][:3]
    teacher = nn.Conv2d(1, 3, 1)
    calls = []
    refine = refiner.refine
    refiner.refine = lambda *args: calls.append(len(args[0])) or refine(*args)
    first, available = refiner.probabilities(images[:2], [(0, 0), (0, 1)], teacher, step=0)
    assert first.shape == (2, 2, 32, 32) and first.min() >= 0 and first.max() <= 1 and available.all()
    again, _ = refiner.probabilities(images[:2].flip(0), [(0, 1), (0, 0)], teacher, step=1)
    assert torch.equal(again, first.flip(0)) and calls == [2]  # cached
    # step 2: (0, 0) and (0, 1) are stale, (0, 2) is missing; only 2 per step, missing first
    maps, available = refiner.probabilities(images, [(0, 0), (0, 1), (0, 2)], teacher, step=2)
    assert calls == [2, 2] and available.all() and refiner.cache_size == 3
    assert torch.equal(maps[1], first[1])  # (0, 1) kept its older map this step
    fresh, available = refiner.probabilities(images[2:], [(0, 3)], nn.Conv2d(1, 3, 1), step=2)
    assert available.all() and calls == [2, 2, 1]
    refiner.per_step = 1
    maps, available = refiner.probabilities(images[:2], [(1, 0), (1, 1)], teacher, step=3)
    assert available.tolist() == [True, False] and (maps[1] == 0).all()
