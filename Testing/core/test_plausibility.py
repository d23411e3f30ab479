"""Warnings for runs whose result cannot mean much: constant image, slice step, modality, empty result."""

from __future__ import annotations

import numpy as np
import pytest

from vessa.io import Template, Volume
from vessa.plausibility import (
    image_modality,
    image_warnings,
    modality_mismatch,
    modality_warning,
    result_warnings,
)


def slab_template(thickness: int, axis: int = 0, spacing=(1.0, 1.0, 3.0), modality: str = "") -> Template:
    """A 12 x 12 x 12 template whose structure is `thickness` voxels thick along array axis `axis`."""
    mask = np.zeros((12, 12, 12), bool)
    index = [slice(2, 10)] * 3
    index[axis] = slice(4, 4 + thickness)
    mask[tuple(index)] = True
    return Template(Volume(np.random.default_rng(0).normal(size=mask.shape), spacing), mask, "lesion", case_id="t1",
                    modality=modality)


def target(spacing=(0.8, 0.8, 3.0), fill: float | None = None) -> Volume:
    array = np.random.default_rng(1).normal(size=(10, 16, 16)) if fill is None else np.full((10, 16, 16), fill)
    return Volume(array, spacing)


def test_a_constant_image_is_said_to_hold_nothing_to_find():
    (warning,) = image_warnings(target(fill=0.0), [slab_template(3)])
    assert warning.startswith("the image is constant (every voxel is 0.0)")
    assert image_warnings(target(), [slab_template(3)]) == []


@pytest.mark.parametrize(("thickness", "step", "warned"), [
    (2, 2, False),  # 3 mm centre to centre: 2 slices of 3 mm
    (2, 3, True),
    (4, 4, False),
    (4, 5, True),
])
def test_a_slice_step_above_the_structures_extent_is_warned(thickness, step, warned):
    warnings = image_warnings(target(), [slab_template(thickness)], slice_step=step)
    assert bool(warnings) is warned
    if warned:
        assert f"a slice step of {step} exceeds the structure's extent" in warnings[0]
        assert f"{(thickness - 1) * 3.0:.1f} mm, {thickness} slice(s) of 3 mm here" in warnings[0]


def test_the_extent_is_measured_along_the_targets_slices_in_millimetres():
    # 2 voxels of 0.5 mm along i, 8 of 3 mm along k: 21 mm along the target's slices (along k)
    thin_sideways = slab_template(2, axis=2, spacing=(0.5, 1.0, 3.0))
    assert image_warnings(target(), [thin_sideways], slice_step=8) == []
    # a target cut along i (3 mm apart, 0.8 mm in plane): 0.5 mm, one slice
    sideways = Volume(np.random.default_rng(2).normal(size=(40, 40, 6)), (3.0, 0.8, 0.8))
    (warning,) = image_warnings(sideways, [thin_sideways], slice_step=2)
    assert "spans 0.5 mm, 1 slice(s) of 3 mm here" in warning


@pytest.mark.parametrize(("target_modality", "template_modality", "mismatch"), [
    ("CT", "CT", False),
    ("MR", "CT", True),
    ("MR", "PT", True),
    ("", "", False),
    ("", "MR", False),
    ("", "CT", True),
    ("CT", "", True),
    ("MR", "MR", False),
])
def test_modality_mismatch_table(target_modality, template_modality, mismatch):
    assert modality_mismatch(target_modality, template_modality) is mismatch


def test_an_mr_template_on_a_ct_is_warned():
    assert modality_warning(slab_template(3, modality="MR"), "lung2", "CT") == (
        "template t1/lesion is MR but lung2 is CT; using it anyway")
    assert modality_warning(slab_template(3, modality="CT"), "lung2", "CT") is None


def test_image_modality_from_the_declaration_or_the_ct_rule():
    assert image_modality(np.zeros(3), " mr ") == "MR"
    assert image_modality(np.array([-1024.0, 40.0])) == "CT"
    assert image_modality(np.array([0.0, 400.0])) == ""


def test_an_empty_result_is_warned():
    assert result_warnings(np.zeros((2, 3, 3), bool), "lesion", 0.5) == [
        "the result is empty: no voxel of 'lesion' reaches probability 0.5 (the model did not find it)"]
    assert result_warnings(np.ones((2, 3, 3), bool), "lesion", 0.5) == []
