"""VolumeSegmenter: exact output grid, 2D input, propagation, bad input, out-of-memory handling."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from vessa.errors import BankError, InputError
from vessa.io import Template, Volume
from vessa.model.assistant import TemplateAssistant
from vessa.model.volume_segmenter import VolumeSegmenter

ROTATION = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])  # oblique, 36.87 degrees


def target_volume() -> Volume:
    """5 x 40 x 30 voxels, 0.7 x 0.7 x 3 mm, rotated, with a bright ellipse on slices 1-3."""
    rng = np.random.default_rng(0)
    array = rng.normal(100.0, 10.0, (5, 40, 30)).astype(np.float32)
    jj, ii = np.mgrid[:40, :30]
    array[1:4][:, ((jj - 20) / 9) ** 2 + ((ii - 14) / 7) ** 2 < 1] += 150.0
    return Volume(array, spacing=(0.7, 0.7, 3.0), origin=(-12.5, 30.25, 7.0), direction=ROTATION)


def template() -> Template:
    rng = np.random.default_rng(1)
    array = rng.normal(90.0, 10.0, (6, 36, 32)).astype(np.float32)
    mask = np.zeros(array.shape, dtype=bool)
    jj, ii = np.mgrid[:36, :32]
    mask[2:5][:, ((jj - 18) / 8) ** 2 + ((ii - 16) / 8) ** 2 < 1] = True
    array[mask] += 160.0
    return Template(Volume(array, spacing=(0.8, 0.8, 2.5)), mask, "lesion", case_id="t1")


@pytest.fixture
def segmenter(assistant: TemplateAssistant) -> VolumeSegmenter:
    return VolumeSegmenter(assistant, device="cpu", batch_size=4)


def test_output_is_on_the_exact_input_grid(segmenter: VolumeSegmenter):
    image = target_volume()
    fractions: list[float] = []
    result = segmenter.segment(image, [template()], "lesion", progress=fractions.append)
    probability = result.probability
    assert probability.shape == image.shape and probability.array.dtype == np.float32
    np.testing.assert_array_equal(probability.spacing, image.spacing)
    np.testing.assert_array_equal(probability.origin, image.origin)
    np.testing.assert_array_equal(probability.direction, image.direction)
    assert probability.array.min() >= 0.0 and probability.array.max() <= 1.0
    assert result.axis == 0 and result.slice_confidence.shape == (5,)
    assert np.all(np.isfinite(result.slice_confidence)) and result.seconds > 0
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3


def test_a_2d_image_is_one_slice(segmenter: VolumeSegmenter):
    image = Volume(target_volume().array[2], spacing=(0.7, 0.7, 1.0))
    result = segmenter.segment(image, [template()], "lesion")
    assert result.probability.shape == (1, 40, 30) and result.probability.same_grid(image)
    assert result.slice_confidence.shape == (1,)


def test_absent_object_gives_zero_probability(restore_assistant: TemplateAssistant):
    restore_assistant.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.data.fill_(-50.0)
    result = VolumeSegmenter(restore_assistant, device="cpu").segment(target_volume(), [template()], "lesion")
    assert np.all(result.probability.array == 0.0)
    assert np.all(result.slice_confidence < 1e-6)


def test_propagation_feeds_each_found_slice_to_the_next(restore_assistant: TemplateAssistant, monkeypatch):
    restore_assistant.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.data.fill_(50.0)
    extra = []
    decode = restore_assistant.decode

    def spy(*args, **kwargs):
        extra.append(kwargs.get("extra_memory") is not None)
        return decode(*args, **kwargs)

    image = target_volume()
    plain = VolumeSegmenter(restore_assistant, device="cpu", batch_size=2, precision="float32").segment(
        image, [template()], "lesion"
    )
    monkeypatch.setattr(restore_assistant, "decode", spy)
    propagated = VolumeSegmenter(restore_assistant, device="cpu", batch_size=2, propagate=True,
                                 precision="float32").segment(image, [template()], "lesion")
    assert extra == [False, True, True, True, True]  # one decode per slice, memory from the 2nd on
    assert propagated.probability.same_grid(image)
    np.testing.assert_allclose(propagated.probability.array[0], plain.probability.array[0], atol=1e-5)
    assert not np.allclose(propagated.probability.array[1:], plain.probability.array[1:])


def with_outputs(segmenter: VolumeSegmenter, monkeypatch, present: set[int], visible: set[int] | None = None):
    """Make the object score say "present" on the target slices in `present` only, and (with
    `visible`) every mask logit -20 (probability < 0.1) on the other slices; returns the list
    the decoded target slices are appended to, in decoding order."""
    decoded: list[int] = []
    features, decode = segmenter._features, segmenter.assistant.decode

    def target_features(slices, rows, device):
        if slices.raw.shape[1:] == (40, 30):  # the target's slices (the template's are 36 x 32)
            decoded.extend(int(r) for r in rows)
        return features(slices, rows, device)

    def scored(*args, **kwargs):
        out = decode(*args, **kwargs)
        rows = decoded[-len(out.object_score_logits):]
        score = torch.tensor([[50.0 if r in present else -50.0] for r in rows])
        logits = out.logits.clone()
        for i, r in enumerate(rows):
            if visible is not None and r not in visible:
                logits[i] = -20.0
        return dataclasses.replace(out, object_score_logits=score, logits=logits)

    monkeypatch.setattr(segmenter, "_features", target_features)
    monkeypatch.setattr(segmenter.assistant, "decode", scored)
    return decoded


@pytest.mark.parametrize(("present", "visible", "order", "skipped"), [
    ({4}, None, [0, 2, 4, 3], [1]),            # found on the last coarse slice: only the gap beside it
    ({2}, None, [0, 2, 4, 1, 3], []),          # found in the middle: both gaps
    (set(), None, [0, 2, 4], [1, 3]),          # found nowhere: nothing more
    ({0, 1, 2, 3, 4}, {4}, [0, 2, 4, 3], [1]),  # "present" everywhere, but a mask only on slice 4
])
def test_sparse_pass_decodes_the_gaps_beside_the_structure_only(assistant, monkeypatch, present, visible, order,
                                                                 skipped):
    image = target_volume()
    dense = VolumeSegmenter(assistant, device="cpu", batch_size=4, precision="float32")
    reference = dense.segment(image, [template()], "lesion")
    sparse = VolumeSegmenter(assistant, device="cpu", batch_size=4, precision="float32", slice_step=2)
    decoded = with_outputs(sparse, monkeypatch, present, visible)
    result = sparse.segment(image, [template()], "lesion")
    assert decoded == order and result.slices_decoded == len(order) and reference.slices_decoded == 5
    assert result.probability.same_grid(image)
    shown = present if visible is None else visible
    for z in range(5):
        if z in skipped:
            assert np.all(result.probability.array[z] == 0) and result.slice_confidence[z] == 0
        elif z in shown:  # decoded slices are the dense pass's slices
            np.testing.assert_allclose(result.probability.array[z], reference.probability.array[z], atol=1e-5)
        else:
            assert result.probability.array[z].max() < 0.1


def test_sparse_pass_and_propagation_are_refused_together(assistant):
    with pytest.raises(ValueError, match="slice_step=2"):
        VolumeSegmenter(assistant, device="cpu", slice_step=2, propagate=True)
    with pytest.raises(ValueError, match="precision='fp8'"):
        VolumeSegmenter(assistant, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="template_slice_limit=0"):
        VolumeSegmenter(assistant, device="cpu", template_slice_limit=0)


def test_template_slice_limit_bounds_the_template_slices_encoded(assistant, monkeypatch):
    segmenter = VolumeSegmenter(assistant, device="cpu", batch_size=8, template_slice_limit=2)
    shapes = []
    features = segmenter._features
    monkeypatch.setattr(segmenter, "_features", lambda slices, rows, device: shapes.append(
        (slices.raw.shape, len(rows))) or features(slices, rows, device))
    segmenter.segment(target_volume(), [template()], "lesion")  # the template's structure: 3 slices
    assert shapes[0] == ((6, 36, 32), 2)  # 2 template slices (the first and last of the structure)


def three_slices() -> Volume:
    image = target_volume()
    return Volume(image.array[:3], image.spacing, image.origin, image.direction)


def test_out_of_memory_halves_the_batch_for_that_call_only(segmenter: VolumeSegmenter, monkeypatch, caplog):
    image, templates = three_slices(), [template()]
    reference = VolumeSegmenter(segmenter.assistant, device="cpu", batch_size=1).segment(image, templates, "lesion")
    encode = segmenter.assistant.encode
    sizes = []

    def small_memory(images):
        sizes.append(images.shape[0])
        if images.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return encode(images)

    monkeypatch.setattr(segmenter.assistant, "encode", small_memory)
    for _ in range(2):
        sizes.clear()
        segmenter.cache.clear()
        with caplog.at_level(logging.WARNING, logger="vessa.model.volume_segmenter"):
            result = segmenter.segment(image, templates, "lesion")
        # each call: 2 template slices (fails, then 1 + 1), then the 3 target slices one by one
        assert sizes == [2, 1, 1, 1, 1, 1] and segmenter.batch_size == 4
    assert caplog.text.count("out of memory at batch size 2: retrying with batch size 1") == 2
    np.testing.assert_allclose(result.probability.array, reference.probability.array, atol=1e-6)


def test_out_of_memory_at_batch_one_runs_that_call_on_the_cpu(segmenter: VolumeSegmenter, monkeypatch, caplog):
    """The accelerator is stood in for by the 'meta' device, which 'runs out of memory'; the
    model itself stays on the CPU (moving the shared test model to 'meta' would drop its weights),
    so the test records where the segmenter puts it."""
    encode = segmenter.assistant.encode
    accelerator = torch.device("meta")
    tried, placed = [], []

    def accelerator_full(images):
        tried.append(images.device.type)
        if images.is_meta:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return encode(images)

    def place(device):
        placed.append(device)
        segmenter.cache.clear()  # as `_place` does: cached features are on the old device

    monkeypatch.setattr(segmenter.assistant, "encode", accelerator_full)
    monkeypatch.setattr(segmenter, "_place", place)
    segmenter.device = accelerator
    for call in (1, 2):
        tried.clear()
        with caplog.at_level(logging.WARNING, logger="vessa.model.volume_segmenter"):
            result = segmenter.segment(three_slices(), [template()], "lesion")
        assert tried[0] == "meta" and tried[-1] == "cpu"  # every call tries the accelerator first
        assert result.device == "cpu" and segmenter.device == accelerator
        assert placed == [torch.device("cpu"), accelerator] * call  # moved back after the call
        assert caplog.text.count("this run continues on the CPU") == call
    assert result.probability.shape == (3, 40, 30) and result.probability.array.max() > 0


def bad(kind: str):
    image, good = target_volume(), template()
    if kind == "nan":
        image.array[2, 3, 4] = np.nan
    elif kind == "empty mask":
        good.mask = np.zeros_like(good.mask)
    elif kind == "mask grid":
        good.mask = np.ones((6, 36, 31), dtype=bool)
    elif kind == "template nan":
        good.image.array[0, 0, 0] = np.inf
    return image, [] if kind == "no templates" else [good], "" if kind == "empty text" else "lesion"


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("nan", InputError, "1 NaN/infinite"),
        ("empty text", InputError, "non-empty"),
        ("no templates", BankError, "no templates"),
        ("empty mask", BankError, "mask is empty"),
        ("mask grid", BankError, "does not match its image"),
        ("template nan", InputError, "template 1"),
    ],
)
def test_bad_input_fails_before_any_model_work(segmenter: VolumeSegmenter, monkeypatch, kind, error, message):
    def no_model(images):
        raise AssertionError("the model ran on bad input")

    monkeypatch.setattr(segmenter.assistant, "encode", no_model)
    with pytest.raises(error, match=message):
        segmenter.segment(*bad(kind))
