"""vessa.model.tinyvit: shapes, bad input, and window attention against TinyViT's explicit formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vessa.model.tinyvit import TinyViT, WindowAttention


@pytest.fixture(scope="module")
def encoder() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT().eval()


@pytest.mark.parametrize(("shape", "out"), [((1, 3, 64, 96), (1, 256, 4, 6)), ((2, 3, 128, 128), (2, 256, 8, 8))])
def test_output_shape(encoder, shape, out):
    with torch.no_grad():
        assert encoder(torch.randn(shape)).shape == out


@pytest.mark.parametrize("shape", [(1, 3, 100, 64), (3, 64, 64)])
def test_bad_input_shape(encoder, shape):
    with pytest.raises(ValueError, match="H and W multiples of 16"):
        encoder(torch.randn(shape))


def test_bad_configuration():
    with pytest.raises(ValueError, match="4 stages need 4 depths, 3 num_heads"):
        TinyViT(depths=(2, 2, 6))


def reference_window_attention(module: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """TinyViT's block attention as written there: pad, partition, explicit softmax(qk*scale + bias)v."""
    batch, height, width, dim = x.shape
    size, heads = module.window_size, module.num_heads
    pad_b, pad_r = (size - height % size) % size, (size - width % size) % size
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    rows, cols = (height + pad_b) // size, (width + pad_r) // size
    x = x.view(batch, rows, size, cols, size, dim).transpose(2, 3).reshape(-1, size * size, dim)
    windows, tokens, _ = x.shape
    key_dim = dim // heads
    q, k, v = module.qkv(module.norm(x)).view(windows, tokens, heads, -1).split([key_dim] * 3, dim=3)
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
    attention = (q @ k.transpose(-2, -1)) * key_dim**-0.5 + module.attention_bias
    x = (attention.softmax(dim=-1) @ v).transpose(1, 2).reshape(windows, tokens, dim)
    x = module.proj(x).view(batch, rows, cols, size, size, dim).transpose(2, 3).reshape(batch, rows * size, -1, dim)
    return x[:, :height, :width]


@pytest.mark.parametrize(("height", "width"), [(14, 14), (10, 17)])
def test_window_attention_matches_tinyvit_formula(height, width):
    torch.manual_seed(1)
    module = WindowAttention(dim=32, num_heads=2, window_size=7)
    module.attention_bias.normal_()
    x = torch.randn(2, height, width, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference_window_attention(module, x), atol=1e-5, rtol=1e-5)


def test_memory_layout_and_bf16_stay_close(encoder):
    """Channels-last (the default layout) and NCHW weights agree to float rounding; bf16 autocast is close."""
    images = torch.randn(1, 3, 64, 64)
    assert encoder.neck[2].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = encoder(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = encoder(images).float()
        nchw = encoder.to(memory_format=torch.contiguous_format)(images)
        encoder.to(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw, reference, atol=1e-4, rtol=1e-4)
    assert (half - reference).abs().mean() < 0.05 * reference.abs().mean()
