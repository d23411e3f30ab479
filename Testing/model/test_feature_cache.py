"""FeatureCache and its use by VolumeSegmenter: only missing slices are encoded, results unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_volume_segmenter import target_volume, template

from vessa.io import Template, Volume
from vessa.model.assistant import TemplateAssistant
from vessa.model.feature_cache import FeatureCache, volume_key
from vessa.model.sam2_adapter import ImageFeatures
from vessa.model.slicing import template_slices
from vessa.model.volume_segmenter import VolumeSegmenter

ROW_BYTES = (2 * 4 + 3 * 2 + 4 * 1) * 4  # s0 [1, 2, 2, 2] + s1 [1, 3, 2, 1] + embedding [1, 4, 1, 1], float32


class CountingEncoder:
    """Encodes slice i as features filled with i; records the indices it was asked for."""

    def __init__(self):
        self.calls: list[list[int]] = []

    def __call__(self, indices: np.ndarray) -> ImageFeatures:
        self.calls.append([int(i) for i in indices])
        value = torch.as_tensor(indices, dtype=torch.float32).view(-1, 1, 1, 1)
        return ImageFeatures(value.expand(-1, 2, 2, 2).clone(), value.expand(-1, 3, 2, 1).clone(),
                             value.expand(-1, 4, 1, 1).clone(), torch.zeros(1, 4, 1, 1))


def test_only_missing_slices_are_encoded_and_rows_come_back_in_request_order():
    cache, encode = FeatureCache(max_bytes=10 * ROW_BYTES), CountingEncoder()
    first = cache.features(("a",), np.array([3, 1, 2]), encode)
    assert encode.calls == [[3, 1, 2]] and first.embedding.flatten().tolist() == [3.0] * 4 + [1.0] * 4 + [2.0] * 4
    second = cache.features(("a",), np.array([2, 5, 3, 5]), encode)
    assert encode.calls[-1] == [5], "2 and 3 are cached; 5 is asked for once although requested twice"
    assert second.embedding[:, 0, 0, 0].tolist() == [2.0, 5.0, 3.0, 5.0]
    assert second.s0.shape == (4, 2, 2, 2) and second.s1.shape == (4, 3, 2, 1)
    assert (cache.hits, cache.misses, len(cache), cache.bytes) == (3, 4, 4, 4 * ROW_BYTES)
    cache.features(("b",), np.array([2]), encode)
    assert encode.calls[-1] == [2], "another volume key is another slice"


def test_the_least_recently_used_other_volume_goes_first_beyond_the_byte_budget():
    cache, encode = FeatureCache(max_bytes=2 * ROW_BYTES), CountingEncoder()
    cache.features(("a",), np.array([0]), encode)
    cache.features(("b",), np.array([0]), encode)
    cache.features(("a",), np.array([0]), encode)  # a is now more recent than b
    cache.features(("c",), np.array([0]), encode)  # over budget: b goes
    assert cache.bytes == 2 * ROW_BYTES and len(cache) == 2
    cache.features(("a",), np.array([0]), encode)
    cache.features(("c",), np.array([0]), encode)
    assert len(encode.calls) == 3, "a and c are still there"
    cache.features(("b",), np.array([0]), encode)
    assert len(encode.calls) == 4


def test_a_volume_larger_than_the_budget_keeps_the_slices_that_fit():
    cache, encode = FeatureCache(max_bytes=3 * ROW_BYTES), CountingEncoder()
    cache.features(("a",), np.arange(5), encode)
    assert len(cache) == 3 and cache.bytes == 3 * ROW_BYTES
    rerun = cache.features(("a",), np.arange(5), encode)
    assert encode.calls[-1] == [3, 4], "a plain LRU would have evicted each slice before its re-use"
    assert rerun.embedding[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_zero_budget_stores_nothing_and_clear_empties():
    none, encode = FeatureCache(max_bytes=0), CountingEncoder()
    none.features(("a",), np.array([0, 1]), encode)
    none.features(("a",), np.array([0, 1]), encode)
    assert encode.calls == [[0, 1], [0, 1]] and len(none) == 0 and none.bytes == 0
    cache = FeatureCache(max_bytes=4 * ROW_BYTES)
    cache.features(("a",), np.array([0, 1]), encode)
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(-1)
    with pytest.raises(ValueError, match="no slices"):
        cache.features(("a",), np.array([], dtype=int), encode)


def test_stored_rows_do_not_hold_their_batch_alive():
    cache = FeatureCache(max_bytes=10 * ROW_BYTES)
    cache.features(("a",), np.array([0, 1, 2]), CountingEncoder())
    row = cache._entries[(("a",), 1)]
    assert row.embedding.untyped_storage().nbytes() == 4 * 4


def test_volume_key_changes_with_any_voxel_and_with_the_context():
    array = np.zeros((2, 3, 4), np.float32)
    key = volume_key(array, "CT", 0)
    assert volume_key(array.copy(), "CT", 0) == key
    changed = array.copy()
    changed[1, 2, 3] = 1e-6
    assert volume_key(changed, "CT", 0) != key
    assert volume_key(array, "MR", 0) != key and volume_key(array, "CT", 1) != key
    assert volume_key(array.reshape(3, 2, 4), "CT", 0) != key
    assert volume_key(np.asfortranarray(array), "CT", 0) == key, "same values, other memory layout"


class EncoderSpy:
    """Counts the slices `assistant.encode` receives."""

    def __init__(self, assistant: TemplateAssistant, monkeypatch: pytest.MonkeyPatch):
        self.slices = 0
        encode = assistant.encode

        def spy(images: torch.Tensor):
            self.slices += len(images)
            return encode(images)

        monkeypatch.setattr(assistant, "encode", spy)


def test_a_rerun_encodes_nothing_and_gives_the_same_result(assistant: TemplateAssistant, monkeypatch):
    spy = EncoderSpy(assistant, monkeypatch)
    segmenter = VolumeSegmenter(assistant, device="cpu", batch_size=4)
    image, exemplar = target_volume(), template()
    first = segmenter.segment(image, [exemplar], "lesion")
    encoded = spy.slices
    template_needed = len(np.unique(template_slices(5, np.array([2, 3, 4]), 6)))  # structure on slices 2-4
    assert encoded == 5 + template_needed == 7
    second = segmenter.segment(image, [exemplar], "lesion")
    assert spy.slices == encoded
    np.testing.assert_array_equal(second.probability.array, first.probability.array)
    np.testing.assert_array_equal(second.slice_confidence, first.slice_confidence)
    fresh = VolumeSegmenter(assistant, device="cpu", batch_size=4, cache_mib=0).segment(image, [exemplar], "lesion")
    np.testing.assert_array_equal(fresh.probability.array, first.probability.array)


def test_another_structure_of_the_same_template_image_reuses_its_slices(assistant: TemplateAssistant, monkeypatch):
    image, exemplar = target_volume(), template()
    segmenter = VolumeSegmenter(assistant, device="cpu", batch_size=4)
    segmenter.segment(image, [exemplar], "lesion")
    other_mask = np.zeros_like(exemplar.mask)
    other_mask[[2, 4], 5:12, 5:12] = True  # a second structure on the two slices the first call encoded
    other = Template(exemplar.image, other_mask, "cyst", case_id="t1")
    spy = EncoderSpy(assistant, monkeypatch)
    cached = segmenter.segment(image, [other], "cyst")
    assert spy.slices == 0, "target slices and template slices were all encoded by the first call"
    expected = VolumeSegmenter(assistant, device="cpu", batch_size=4, cache_mib=0).segment(image, [other], "cyst")
    np.testing.assert_allclose(cached.probability.array, expected.probability.array, atol=1e-5)


def test_a_changed_volume_or_setting_is_encoded_again(assistant: TemplateAssistant, monkeypatch):
    image, exemplar = target_volume(), template()
    segmenter = VolumeSegmenter(assistant, device="cpu", batch_size=4)
    segmenter.segment(image, [exemplar], "lesion")
    spy = EncoderSpy(assistant, monkeypatch)
    edited = image.array.copy()
    edited[0, 0, 0] += 1.0
    segmenter.segment(image.with_array(edited), [exemplar], "lesion")
    assert spy.slices == 5, "a changed voxel: the target again, not the template"
    moved = Volume(image.array, spacing=(0.7, 0.7, 4.0), origin=image.origin, direction=image.direction)
    segmenter.segment(moved, [exemplar], "lesion")
    assert spy.slices == 10, "other spacing: other frame"
    segmenter.segment(image, [exemplar], "lesion", modality="MR")
    assert spy.slices == 15, "another intensity policy for the target"
    segmenter._place(torch.device("cpu"))  # moving the model (a CPU fallback call and back)
    assert len(segmenter.cache) == 0
    with pytest.raises(ValueError, match="cache_mib"):
        VolumeSegmenter(assistant, device="cpu", cache_mib=-1)
