"""The one module that touches sam2: a new sam2 version is this file's work.

- Build: `build_sam` instantiates sam2's own hydra config (`configs/sam2.1/sam2.1_hiera_*.yaml`)
  with `++model.image_size=S`; the whole `SAM2Base` is kept because its memory encoder, memory
  attention, prompt encoder and mask decoder are reused by the assistant. Nothing in the sam2
  modules depends on the input size except derived sizes (prompt-encoder grid, RoPE tables,
  recomputed on the fly), so official 1024-px weights load at any size. `sam2_variant` names
  the config an official state dict fits; `parameter_groups` splits a model by role.
- Image features: `encode_images` -> `ImageFeatures`.
- Memory: `mask_memory` encodes features + a mask as sam2 encodes a mask-conditioned video
  frame (`SAM2Base._encode_new_memory`); `attend_to_memories` runs sam2's memory attention of
  a target on template memories (templates play sam2's conditioning frames, temporal encoding
  `maskmem_tpos_enc[-1]`; an extra memory is the previous frame's, `maskmem_tpos_enc[-2]`).
- Prompts and masks: `PromptDecoder` (a prompt encoder + mask decoder pair: `prompt_decoder(sam)`
  of a SAM2Base, or SAM-1's of the TinyViT-SAM family from `sam1_prompt_encoder` /
  `sam1_mask_decoder`); `LayerNorm2d` for the TinyViT encoder.
- sam2's own usage API, for comparisons: `image_predictor`.

Shapes for an input of side S (Hiera-T):
    s0        [B, 32, S/4, S/4]   level-0 FPN features, already through decoder.conv_s0
    s1        [B, 64, S/8, S/8]   level-1 FPN features, already through decoder.conv_s1
    embedding [B, 256, S/16, S/16] top FPN level (memory attention / matching input)
    pos       [1, 256, S/16, S/16] sine position encoding of `embedding` (same for all)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer
from sam2.modeling.sam2_base import SAM2Base
from sam2.modeling.sam2_utils import LayerNorm2d
from torch import nn

from vessa.errors import CheckpointError
from vessa.model.config import SAM2_CONFIGS

__all__ = ["LayerNorm2d", "ImageFeatures", "PromptDecoder", "SAM2Base", "attend_to_memories", "build_sam",
           "encode_images", "image_predictor", "mask_memory", "parameter_groups", "prompt_decoder",
           "sam1_mask_decoder", "sam1_prompt_encoder", "sam2_variant", "token_width"]

# Hiera trunks of the sam2.1 configs: (number of blocks, first embedding dim) -> variant.
HIERA_VARIANTS = {(12, 96): "tiny", (16, 96): "small", (24, 112): "base_plus", (48, 144): "large"}


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


def sam2_variant(state_dict: dict[str, torch.Tensor], path: str | Path) -> str:
    """sam2.1 config name of an official state dict, from its Hiera depth and width."""
    blocks = {key.split(".")[3] for key in state_dict if key.startswith("image_encoder.trunk.blocks.")}
    embed = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    variant = HIERA_VARIANTS.get((len(blocks), None if embed is None else int(embed.shape[0])))
    if variant is None:
        raise CheckpointError(f"{path}: weights match no sam2.1 Hiera variant ({sorted(HIERA_VARIANTS.values())})")
    return SAM2_CONFIGS[variant]


def token_width(sam: SAM2Base) -> int:
    """Width of the prompt tokens and of the image embedding (256)."""
    return sam.hidden_dim


def parameter_groups(sam: SAM2Base) -> dict[str, list[nn.Parameter]]:
    """sam2's parameters by role: encoder (Hiera + FPN), memory (memory encoder/attention,
    temporal encoding), decoder (prompt encoder + mask decoder). Parts the assistant never uses
    (object pointers, no-memory embeddings) are left out."""
    return {
        "encoder": list(sam.image_encoder.parameters()),
        "memory": [*sam.memory_encoder.parameters(), *sam.memory_attention.parameters(), sam.maskmem_tpos_enc]
        + ([sam.no_obj_embed_spatial] if sam.no_obj_embed_spatial is not None else []),
        "decoder": [*sam.sam_prompt_encoder.parameters(), *sam.sam_mask_decoder.parameters()],
    }


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


def mask_memory(sam: SAM2Base, features: ImageFeatures, mask_logits: torch.Tensor,
                object_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sam2's memory [B, 64, h, w] of features + mask logits [B, 1, S, S] (object logits
    [B, 1]), and its position encoding [1, 64, h, w]."""
    h, w = features.embedding.shape[-2:]
    memory, pos = sam._encode_new_memory(
        current_vision_feats=[features.embedding.flatten(2).permute(2, 0, 1)],
        feat_sizes=[(h, w)],
        pred_masks_high_res=mask_logits,
        object_score_logits=object_logits,
        is_mask_from_pts=False,
    )
    return memory, pos[-1][:1]


def attend_to_memories(
    sam: SAM2Base,
    target: ImageFeatures,
    memory: torch.Tensor,
    memory_pos: torch.Tensor,
    extra_memory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Target embedding [B, 256, h, w] after sam2 memory attention to K template memories
    (memory [B, K, 64, h, w], memory_pos [1, 64, h, w]) and, optionally, one more memory
    ([B, 64, h, w], pos) as the previous frame."""
    batch, channels, h, w = target.embedding.shape
    count = memory.shape[1]
    tpos = sam.maskmem_tpos_enc  # [num_maskmem, 1, 1, 64]
    flat = memory.permute(1, 3, 4, 0, 2).reshape(count * h * w, batch, -1)
    pos = (memory_pos.flatten(2).permute(2, 0, 1) + tpos[-1]).repeat(count, 1, 1)
    memories, positions = [flat], [pos.expand(-1, batch, -1)]
    if extra_memory is not None:
        extra, extra_pos = extra_memory
        memories.append(extra.flatten(2).permute(2, 0, 1))
        positions.append((extra_pos.flatten(2).permute(2, 0, 1) + tpos[-2]).expand(-1, batch, -1))
    out = sam.memory_attention(
        curr=target.embedding.flatten(2).permute(2, 0, 1),
        curr_pos=target.pos.flatten(2).permute(2, 0, 1).expand(-1, batch, -1),
        memory=torch.cat(memories),
        memory_pos=torch.cat(positions),
        num_obj_ptr_tokens=0,
    )
    return out.permute(1, 2, 0).reshape(batch, channels, h, w)


@dataclass
class PromptDecoder:
    """A sam2 prompt encoder and mask decoder, used together."""

    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder

    def encode(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
               masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse [B, N, 256] and dense [B, 256, h, w] prompt embeddings of points (coords
        [B, P, 2] as (x, y) input pixels, labels [B, P]), boxes [B, 4] and mask logits
        [B, 1, S/4, S/4]."""
        return self.prompt_encoder(points=points, boxes=boxes, masks=masks)

    def decode(self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor, multimask: bool,
               high_res_features: list[torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-res mask logits [B, M, S/4, S/4], predicted IoU [B, M] and object-score logits
        [B, 1] (M = 3 with `multimask`, else 1)."""
        low_res, iou, _, object_logits = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        return low_res, iou, object_logits


def prompt_decoder(sam: SAM2Base) -> PromptDecoder:
    """The prompt encoder and mask decoder of a sam2 model."""
    return PromptDecoder(sam.sam_prompt_encoder, sam.sam_mask_decoder)


def sam1_prompt_encoder(embed_dim: int, image_size: int) -> PromptEncoder:
    """SAM-1's prompt encoder (as sam2's module) for input side `image_size`."""
    grid = image_size // 16
    return PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                         input_image_size=(image_size, image_size), mask_in_chans=16)


def sam1_mask_decoder(embed_dim: int) -> MaskDecoder:
    """SAM-1's mask decoder (as sam2's module): 3 multimask outputs plus the single-mask token,
    no high-resolution features, no object score."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
        transformer_dim=embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=False,
        pred_obj_scores=False,
        iou_prediction_use_sigmoid=False,
    )


def image_predictor(sam: SAM2Base):
    """sam2's own `SAM2ImagePredictor` on `sam` (its feature sizes set for `sam.image_size`:
    the predictor assumes 1024 px)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam)
    size = sam.image_size
    predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    return predictor
