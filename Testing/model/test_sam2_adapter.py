"""sam2 image encoder features at 256 and 512 px."""

from __future__ import annotations

import pytest
import torch

from vessa.model.sam2_adapter import build_sam, encode_images


@pytest.mark.parametrize(("size", "batch"), [(256, 2), (512, 1)])
def test_feature_shapes(size, batch):
    sam = build_sam("configs/sam2.1/sam2.1_hiera_t.yaml", size).eval()
    with torch.inference_mode():
        features = encode_images(sam, torch.randn(batch, 3, size, size))
    assert features.s0.shape == (batch, 32, size // 4, size // 4)
    assert features.s1.shape == (batch, 64, size // 8, size // 8)
    assert features.embedding.shape == (batch, 256, size // 16, size // 16)
    assert features.pos.shape == (1, 256, size // 16, size // 16)
    assert sam.sam_prompt_encoder.mask_input_size == (size // 4, size // 4)
    assert len(features) == batch and len(features[1:]) == batch - 1
    assert torch.isfinite(features.embedding).all()


def test_wrong_input_size_is_rejected():
    sam = build_sam("configs/sam2.1/sam2.1_hiera_t.yaml", 256)
    with pytest.raises(ValueError, match=r"expected \[B, 3, 256, 256\]"):
        encode_images(sam, torch.zeros(1, 3, 512, 512))
    with pytest.raises(ValueError, match="expected"):
        encode_images(sam, torch.zeros(1, 1, 256, 256))
