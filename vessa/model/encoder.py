"""sam2 model construction and image features (Hiera trunk + FPN neck).

`build_sam` instantiates sam2's own hydra config (`configs/sam2.1/sam2.1_hiera_*.yaml`)
with `++model.image_size=S`; the whole `SAM2Base` is kept because its memory encoder,
memory attention, prompt encoder and mask decoder are reused by the assistant. Nothing in
the sam2 modules depends on the input size except derived sizes (prompt-encoder grid,
RoPE tables, recomputed on the fly), so official 1024-px weights load at any size.

Shapes for an input of side S (Hiera-T):
    s0        [B, 32, S/4, S/4]   level-0 FPN features, already through decoder.conv_s0
    s1        [B, 64, S/8, S/8]   level-1 FPN features, already through decoder.conv_s1
    embedding [B, 256, S/16, S/16] top FPN level (memory attention / matching input)
    pos       [1, 256, S/16, S/16] sine position encoding of `embedding` (same for all)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam2_base import SAM2Base


def build_sam(config_name: str, image_size: int, overrides: Sequence[str] = ()) -> SAM2Base:
    """Randomly initialised sam2 model from its packaged config (plus hydra `overrides`), in
    train mode, on CPU."""
    return build_sam2(
        config_name,
        ckpt_path=None,
        device="cpu",
        mode="train",
        hydra_overrides_extra=[f"++model.image_size={image_size}", *overrides],
        apply_postprocessing=False,
    )


@dataclass
class ImageFeatures:
    """Encoder output for a batch of images (shapes in the module docstring)."""

    s0: torch.Tensor
    s1: torch.Tensor
    embedding: torch.Tensor
    pos: torch.Tensor

    def __len__(self) -> int:
        return self.embedding.shape[0]

    def __getitem__(self, index: slice | torch.Tensor) -> ImageFeatures:
        return ImageFeatures(self.s0[index], self.s1[index], self.embedding[index], self.pos)

    def to(self, device: torch.device | str) -> ImageFeatures:
        return ImageFeatures(self.s0.to(device), self.s1.to(device), self.embedding.to(device), self.pos.to(device))


def encode_images(sam: SAM2Base, images: torch.Tensor) -> ImageFeatures:
    """Run sam2's image encoder on normalised images [B, 3, S, S]."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (sam.image_size, sam.image_size):
        raise ValueError(f"images: expected [B, 3, {sam.image_size}, {sam.image_size}], got {list(images.shape)}")
    out = sam.forward_image(images)
    s0, s1, embedding = out["backbone_fpn"]
    return ImageFeatures(s0=s0, s1=s1, embedding=embedding, pos=out["vision_pos_enc"][-1][:1])
