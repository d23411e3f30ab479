"""Template matching on hand-built feature maps with a known answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic_features import TARGET_REGION, C, H, W, region_mask, synthetic_pair

from vessa.model.matching import MaskedFeatureMatcher, downsample_mask


def test_similarity_peaks_on_the_matching_region():
    target, template, mask, v = synthetic_pair()
    result = MaskedFeatureMatcher(top_k=5)(target, template[:, None], mask[:, None])
    sim = result.similarity[0, 0]
    inside = region_mask(TARGET_REGION)
    assert result.similarity.shape == result.bg_similarity.shape == (1, 1, H, W)
    assert sim[inside].min() > 0.99  # identical vector: prototype and dense cosine are 1
    assert sim[~inside].max() < 0.8
    assert inside.flatten()[sim.argmax()]
    assert F.cosine_similarity(result.prototype[0], v, dim=0) > 0.999
    assert result.valid.tolist() == [[True]]


def test_templates_without_foreground_are_ignored():
    target, template, mask, _ = synthetic_pair()
    matcher = MaskedFeatureMatcher(top_k=5)
    single = matcher(target, template[:, None], mask[:, None])
    other = torch.randn(1, C, H, W)
    both = matcher(target, torch.stack([template, other], dim=1), torch.stack([mask, torch.zeros_like(mask)], dim=1))
    assert both.valid.tolist() == [[True, False]]
    torch.testing.assert_close(both.similarity, single.similarity)
    torch.testing.assert_close(both.prototype, single.prototype)


@pytest.mark.parametrize("top_k", [1, 2])
def test_dense_and_prototype_terms_have_their_exact_values(top_k):
    a, b = F.normalize(torch.randn(2, C), dim=-1)
    template = torch.zeros(1, 1, C, 2, 2)
    template[0, 0, :, 0, 0], template[0, 0, :, 0, 1] = a, b
    template[0, 0, :, 1, :] = torch.randn(C, 2)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 1, 2, 2)
    target = a.view(1, C, 1, 1).expand(1, C, 2, 2).clone()
    result = MaskedFeatureMatcher(top_k=top_k)(target, template, mask)
    proto = float(a @ F.normalize(a + b, dim=0))
    dense = 1.0 if top_k == 1 else (1.0 + float(a @ b)) / 2
    assert result.similarity[0, 0, 0, 0].item() == pytest.approx(0.5 * (proto + dense), abs=1e-5)


def test_area_downsampling_gives_covered_fraction():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :2] = 1
    small = downsample_mask(mask, (2, 2))
    assert small[0, 0].tolist() == [[0.5, 0.0], [0.0, 0.0]]


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="do not fit"):
        MaskedFeatureMatcher()(torch.zeros(1, C, H, W), torch.zeros(1, 2, C, H, W), torch.zeros(1, 3, 1, H, W))
