"""Template matching on hand-built feature maps with a known answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic_features import TARGET_REGION, C, H, W, region_mask, synthetic_pair

from vessa.model.matching import MaskedFeatureMatcher, downsample_mask, masked_prototypes, rescale_maps


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


def test_masked_prototypes_are_the_normalised_means_under_and_outside_the_mask():
    features = torch.randn(2, C, H, W)
    masks = torch.zeros(2, 1, 4 * H, 4 * W)
    masks[0, :, : 4 * 5, : 4 * 6] = 1.0  # cells rows 0-4, cols 0-5
    masks[1] = 1.0  # no background at all
    prototypes = masked_prototypes(features, masks)
    assert prototypes.shape == (2, 2, C)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[:5, :6] = True
    unit = F.normalize(features[0], dim=0)
    torch.testing.assert_close(prototypes[0, 0], F.normalize(unit[:, inside].mean(1), dim=0))
    torch.testing.assert_close(prototypes[0, 1], F.normalize(unit[:, ~inside].mean(1), dim=0))
    assert torch.all(prototypes[1, 1] == 0)


def test_fine_level_sharpens_the_similarity_to_its_grid():
    """The embedding only says "somewhere in this 16-px cell"; the stride-4 level says where."""
    target, template, mask, _ = synthetic_pair()
    u = F.normalize(torch.randn(32), dim=0)
    fine_target = 0.3 * torch.randn(1, 32, 4 * H, 4 * W)
    fine_target[0, :, 4 * 10 + 1 : 4 * 10 + 3, 4 * 3 + 1 : 4 * 3 + 3] = u[:, None, None]  # 2x2 inside cell (10, 3)
    fine_template = 0.3 * torch.randn(1, 32, 4 * H, 4 * W)
    fine_template[0, :, 4 * 3 : 4 * 7, 4 * 4 : 4 * 9] = u[:, None, None]  # under the template mask
    prototypes = masked_prototypes(fine_template, mask)[:, None]  # [B, K, 2, C]
    matcher = MaskedFeatureMatcher(top_k=5)
    coarse = matcher(target, template[:, None], mask[:, None])
    fused = matcher(target, template[:, None], mask[:, None], [(fine_target, prototypes)])
    assert fused.similarity.shape == fused.bg_similarity.shape == (1, 1, 4 * H, 4 * W)
    assert fused.similarity.min() >= 0 and fused.similarity.max() <= 1
    row, col = divmod(int(fused.similarity.flatten().argmax()), 4 * W)
    assert (4 * 10 + 1 <= row <= 4 * 10 + 2) and (4 * 3 + 1 <= col <= 4 * 3 + 2)
    cell = fused.similarity[0, 0, 4 * 10 : 4 * 11, 4 * 3 : 4 * 4]
    assert cell.max() - cell.min() > 0.3  # within one embedding cell the map is no longer flat
    outside = ~region_mask(TARGET_REGION).repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert fused.similarity[0, 0][outside].max() < 0.55  # background: the embedding says no, so at most half
    torch.testing.assert_close(fused.prototype, coarse.prototype)  # the prototype token stays the embedding's


def test_rescaled_maps_span_zero_to_one_and_flat_maps_become_the_constant():
    maps = torch.stack([torch.linspace(-1, 1, 16).view(4, 4), torch.full((4, 4), 0.3)])[:, None]
    out = rescale_maps(maps, 0.5)
    assert out[0].max() == 1 and out[0].min() == 0
    assert torch.all(out[1] == 0.5)
