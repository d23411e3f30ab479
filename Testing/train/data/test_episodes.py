"""Stage-1 episodes: shapes, determinism per step, masks follow their structure, bad cases."""

import numpy as np
import pytest
import torch

from vessa.errors import JobError
from vessa.train.data.episodes import EpisodeCase, EpisodeConfig, EpisodeSampler, gmm_render, sliceable_axes


def toy_case() -> EpisodeCase:
    image = np.random.default_rng(0).random((10, 40, 30)).astype(np.float32)
    box = np.zeros(image.shape, bool)
    box[2:8, 5:20, 5:15] = True
    band = np.zeros(image.shape, bool)
    band[:, 25:35, :] = True
    return EpisodeCase("toy", image, {"box": box, "band": band}, spacing=(2.0, 1.0, 1.0))


@pytest.fixture
def sampler() -> EpisodeSampler:
    config = EpisodeConfig(image_size=32, max_templates=3, elastic_magnitude=(0.0, 0.5))
    return EpisodeSampler([toy_case()], config, seed=7)


def test_batch_shapes_and_ranges(sampler):
    batch = sampler.batch(step=3, batch_size=2)
    k = batch["templates"].shape[1]
    assert 1 <= k <= 3
    assert batch["image"].shape == (2, 1, 32, 32)
    assert batch["templates"].shape == batch["template_masks"].shape == (2, k, 1, 32, 32)
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    assert all(text in {"box", "band"} for text in batch["text"])
    # every template shows the structure (slices are drawn where it covers >= min_area)
    assert (batch["template_masks"].sum(dim=(-1, -2, -3)) > 0).all()


def test_absent_targets_have_empty_masks_and_present_templates():
    config = EpisodeConfig(image_size=32, max_templates=2, absent_probability=1.0)
    batch = EpisodeSampler([toy_case()], config, seed=2, structures=["box"]).batch(0, 3)
    assert batch["mask"].sum() == 0  # the box is absent from slices 0, 1, 8, 9
    assert (batch["template_masks"].sum(dim=(-1, -2, -3)) > 0).all()


def test_same_step_same_batch_other_step_differs(sampler):
    first, again, other = sampler.batch(5, 2), sampler.batch(5, 2), sampler.batch(6, 2)
    for key in ("image", "mask", "templates", "template_masks"):
        assert torch.equal(first[key], again[key])
    assert first["text"] == again["text"]
    assert not torch.equal(first["image"], other["image"])


def test_mask_is_the_named_structure():
    config = EpisodeConfig(image_size=40, max_templates=1, elastic_magnitude=(0.0, 0.0), z_jitter=0,
                           synthetic_probability=0.0, absent_probability=0.0)
    sampler = EpisodeSampler([toy_case()], config, seed=1, structures=["band"])
    batch = sampler.batch(0, 1)
    mask = batch["mask"][0, 0]
    # the band covers rows 25..34 of 40 (the 40x30 slice is padded to 40x40): about a quarter
    assert batch["text"] == ["band"]
    assert 0.15 < mask.mean() < 0.35


def test_structure_filter_and_errors():
    with pytest.raises(JobError, match="no structure covers"):
        EpisodeSampler([toy_case()], EpisodeConfig(min_area=10_000), structures=["box"])
    bad = np.zeros((2, 3, 3), bool)
    with pytest.raises(JobError, match="case x: a mask's shape"):
        EpisodeCase("x", np.zeros((2, 4, 4)), {"a": bad})


def test_slices_are_framed_as_at_inference():
    # a 40 x 30 slice fills 40 x 30 of the 40 x 40 input, padded on the right (SquareFrame)
    config = EpisodeConfig(image_size=40, max_templates=1, elastic_magnitude=(0.0, 0.0), synthetic_probability=0.0)
    case = toy_case()
    case.image[:] = 1.0
    batch = EpisodeSampler([case], config, seed=0).batch(0, 1)
    columns = batch["image"][0, 0].mean(dim=0)
    assert columns[:25].min() > 0.3 and columns[-8:].max() < 0.05


@pytest.mark.parametrize(("shape", "spacing", "axes"), [
    ((1, 64, 64), (1.0, 0.5, 0.5), [0]),  # a 2D image: its single slice
    ((40, 512, 512), (5.0, 0.7, 0.7), [0]),  # CT: the acquired slices only
    ((181, 217, 181), (1.0, 1.0, 1.0), [0, 1, 2]),  # isotropic MR: every axis
])
def test_sliceable_axes(shape, spacing, axes):
    assert sliceable_axes(shape, spacing) == axes


def test_gmm_render_draws_one_intensity_per_label():
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[:, 16:] = 1
    images = [gmm_render(labels, np.random.default_rng(seed)) for seed in range(6)]
    assert all(image.min() >= 0 and image.max() <= 1 for image in images)
    gaps = [abs(float(image[:, :12].mean() - image[:, 20:].mean())) for image in images]
    # each label gets its own random mean: the two halves differ, by a different amount per draw
    assert sum(gap > 0.3 for gap in gaps) >= 4
    assert max(gaps) - min(gaps) > 0.2


def side_case(case_id: str, left: bool, modality: str) -> EpisodeCase:
    image = np.random.default_rng(1).random((6, 40, 40)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:, 10:30, 2:14] = left
    mask[:, 10:30, 26:38] = not left
    return EpisodeCase(case_id, image, {"lesion": mask}, modality, spacing=(3.0, 1.0, 1.0))


def template_sides(cases: list[EpisodeCase]) -> list[tuple[bool, list[bool]]]:
    """(target on the left?, [template on the left?]) for a few episodes."""
    config = EpisodeConfig(image_size=40, max_templates=3, elastic_magnitude=(0.0, 0.0))
    sampler = EpisodeSampler(cases, config, seed=3)
    columns = torch.arange(40).float()

    def left(mask):
        return bool((mask[0].sum(0) * columns).sum() / mask.sum() < 20)

    sides = []
    for step in range(6):
        batch = sampler.batch(step, 2)
        for index in range(2):
            sides.append((left(batch["mask"][index]), [left(m) for m in batch["template_masks"][index]]))
    return sides


def test_templates_come_from_other_subjects_of_the_same_modality_only():
    mixed = template_sides([side_case("a", True, "MR"), side_case("b", False, "CT")])
    assert all(all(t == target for t in templates) for target, templates in mixed)
    same = template_sides([side_case("a", True, "MR"), side_case("b", False, "MR")])
    crossing = sum(t != target for target, templates in same for t in templates)
    assert crossing > len(same)  # most templates come from the other subject (p = 0.8 each)


def test_batches_are_plain_tensors(sampler):
    # a MONAI MetaTensor here would route every model op through its slow __torch_function__
    batch = sampler.batch(0, 1)
    assert all(type(batch[key]) is torch.Tensor for key in ("image", "mask", "templates", "template_masks"))


def test_location_prior_is_the_template_subjects_mask_at_the_relative_position():
    """One subject: templates are re-deformed copies of it, so the prior of an absent target
    slice (box on slices 2-7 only) is empty and that of a present one shows the box."""
    config = EpisodeConfig(image_size=32, max_templates=2, absent_probability=1.0, elastic_magnitude=(0.0, 0.5))
    absent = EpisodeSampler([toy_case()], config, seed=2, structures=["box"]).batch(0, 4)
    assert absent["location_prior"].shape == (4, 1, 32, 32) and absent["location_prior"].sum() == 0
    config.absent_probability = 0.0
    present = EpisodeSampler([toy_case()], config, seed=2, structures=["box"]).batch(0, 4)
    prior, truth = present["location_prior"], present["mask"]
    assert prior.min() >= 0 and prior.max() <= 1
    overlap = (prior * truth).sum(dim=(1, 2, 3)) / truth.sum(dim=(1, 2, 3))
    assert (overlap > 0.3).all()  # misaligned by the deformations, not unrelated
