"""TemplateAssistant: template- and text-guided sam2 segmentation of 2D slices (stage 1).

Pipeline for B target slices, each with K template slices (image + mask):
1. sam2 image encoder on targets and templates.
2. Template memory: sam2's memory encoder on each template's features + mask, exactly as
   sam2 encodes a mask-conditioned video frame.
3. Memory attention: the target embedding attends to the K templates' memories (templates
   play sam2's "conditioning frames"; an optional propagated neighbour-slice memory is the
   previous frame).
4. Matching (raw target vs. template embeddings, plus masked prototypes of the finer FPN
   levels s1/s0 fused on the finest grid) -> similarity maps -> points, box and dense mask
   prompt (`matching`, `prompts`).
5. sam2 prompt encoder; two extra sparse tokens are appended: `prototype_proj(fg prototype)`
   and `text_proj(text embedding)` (both zero-initialised, so with official SAM2.1 weights
   and untrained new layers the model starts as plain SAM2 with generated prompts).
6. sam2 mask decoder with high-res features, 3 masks + IoU + object score.
7. Location prior (`ModelConfig.location_prior` > 0): the templates' masks at the target's
   relative position in the common slice frame (what an atlas gives without a model; the
   caller passes it, else the mean of the K template masks is used) are mapped to logits
   2p - 1, averaged into the dense prompt with the similarity-derived logits, and added to
   the decoder's mask logits times a learned gate. The decoder thus predicts a correction of
   the transferred template mask (atlas-prior residual), which a model trained briefly
   already profits from; with the option off (0) the model is plain sam2 decoding.
Every call into sam2 goes through `sam2_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vessa.model import sam2_adapter
from vessa.model.config import ModelConfig
from vessa.model.device import autocast
from vessa.model.matching import MaskedFeatureMatcher, masked_prototypes
from vessa.model.prompts import PromptGenerator, Prompts
from vessa.model.sam2_adapter import ImageFeatures
from vessa.model.text import TextEncoder


@dataclass
class TemplateMemory:
    """Encoded template slices, leading dims [N] (or [B, K] after `gather`).

    embedding [N, 256, h, w] raw encoder embedding (for matching), masks [N, 1, S, S] in
    [0, 1], memory [N, 64, h, w] sam2 mask memory, memory_pos [1, 64, h, w], prototypes:
    per fine matching level (`MatchingConfig.fine_levels`, in order) the foreground and
    background prototypes [N, 2, C_l] (`matching.masked_prototypes`).
    """

    embedding: torch.Tensor
    masks: torch.Tensor
    memory: torch.Tensor
    memory_pos: torch.Tensor
    prototypes: tuple[torch.Tensor, ...] = ()

    def gather(self, index: torch.Tensor) -> TemplateMemory:
        """Select templates per target: index [B, K] into N -> fields [B, K, ...]."""
        return TemplateMemory(self.embedding[index], self.masks[index], self.memory[index], self.memory_pos,
                              tuple(p[index] for p in self.prototypes))

    def to(self, device: torch.device | str) -> TemplateMemory:
        return TemplateMemory(self.embedding.to(device), self.masks.to(device), self.memory.to(device),
                              self.memory_pos.to(device), tuple(p.to(device) for p in self.prototypes))

    @staticmethod
    def cat(parts: list[TemplateMemory]) -> TemplateMemory:
        """Template slices of several encoded batches as one memory (leading dims [N])."""
        return TemplateMemory(
            torch.cat([p.embedding for p in parts]),
            torch.cat([p.masks for p in parts]),
            torch.cat([p.memory for p in parts]),
            parts[0].memory_pos,
            tuple(torch.cat(level) for level in zip(*(p.prototypes for p in parts), strict=True)),
        )


@dataclass
class AssistantOutput:
    """logits [B, 3, S, S] and low_res_logits [B, 3, S/4, S/4] (mask logits of the 3 candidate
    masks), iou [B, 3] predicted IoU, object_score_logits [B, 1] (> 0: structure present),
    best [B] index of the highest predicted IoU, similarity [B, 1, h, w], prompts used."""

    logits: torch.Tensor
    low_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score_logits: torch.Tensor
    best: torch.Tensor
    similarity: torch.Tensor
    prompts: Prompts

    def _pick(self, values: torch.Tensor) -> torch.Tensor:
        return values[torch.arange(values.shape[0], device=values.device), self.best]

    def best_logits(self) -> torch.Tensor:
        """Logits of the best mask [B, 1, S, S]."""
        return self._pick(self.logits).unsqueeze(1)

    def probabilities(self) -> torch.Tensor:
        """Best-mask probabilities [B, 1, S, S], zero where the object score says absent."""
        present = (self.object_score_logits > 0).to(self.logits.dtype).view(-1, 1, 1, 1)
        return torch.sigmoid(self.best_logits()) * present

    def confidence(self) -> torch.Tensor:
        """Predicted IoU of the best mask times the object probability, [B]."""
        return self._pick(self.iou).float() * torch.sigmoid(self.object_score_logits.float()).squeeze(1)


class TemplateAssistant(nn.Module):
    """Stage-1 VESSA model; see the module docstring. Build with a `ModelConfig`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.sam = sam2_adapter.build_sam(config.sam2_config, config.image_size, config.sam2_overrides)
        self.text_encoder = TextEncoder(config.text)  # frozen, not a submodule: not in state_dict
        width = sam2_adapter.token_width(self.sam)
        self.matcher = MaskedFeatureMatcher(config.matching.top_k)
        self.prompter = PromptGenerator(config.matching, config.image_size)
        self.prototype_proj = nn.Linear(width, width)
        self.text_proj = nn.Linear(self.text_encoder.dim, width)
        for layer in (self.prototype_proj, self.text_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.prior_gate = nn.Parameter(torch.tensor(float(config.location_prior))) if config.location_prior else None

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def fine_levels(self) -> list[str]:
        """FPN levels matched by prototypes besides the embedding (`MatchingConfig.fine_levels`)."""
        return self.config.matching.fine_levels

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group learning rates: encoder (Hiera + FPN), memory
        (memory encoder/attention, temporal encoding), decoder (prompt encoder + mask
        decoder), new (prototype/text token projections, location-prior gate). sam2 parts
        this model never uses (object pointers, no-memory embeddings) are left out."""
        return {
            **sam2_adapter.parameter_groups(self.sam),
            "new": [*self.prototype_proj.parameters(), *self.text_proj.parameters()]
            + ([self.prior_gate] if self.prior_gate is not None else []),
        }

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Normalised images [N, 3, S, S] -> `ImageFeatures`."""
        return sam2_adapter.encode_images(self.sam, images)

    def encode_templates(self, features: ImageFeatures, masks: torch.Tensor) -> TemplateMemory:
        """Template features + masks [N, 1, S, S] (values in [0, 1]) -> `TemplateMemory`."""
        masks = masks.to(features.embedding.dtype)
        present = masks.flatten(1).amax(1, keepdim=True) > 0
        mask_logits = torch.logit(masks.float().clamp(1e-4, 1 - 1e-4))  # sigmoid() gives the mask back
        mem_feats, mem_pos = sam2_adapter.mask_memory(self.sam, features, mask_logits,
                                                      torch.where(present, 10.0, -10.0))
        prototypes = tuple(masked_prototypes(getattr(features, level), masks) for level in self.fine_levels)
        return TemplateMemory(features.embedding, masks, mem_feats, mem_pos, prototypes)

    def prediction_memory(self, features: ImageFeatures, output: AssistantOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """sam2 memory [B, 64, h, w] and its position encoding of a prediction (propagation)."""
        return sam2_adapter.mask_memory(self.sam, features, output.best_logits(), output.object_score_logits)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Frozen (cached) text embeddings [len(texts), D] on the model's device."""
        return self.text_encoder.encode(texts).to(self.device)

    def condition(
        self,
        target: ImageFeatures,
        templates: TemplateMemory,
        extra_memory: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Target embedding [B, 256, h, w] after sam2 memory attention to K template memories
        (templates [B, K, ...]) and, optionally, one more memory ([B, 64, h, w], pos)."""
        return sam2_adapter.attend_to_memories(self.sam, target, templates.memory, templates.memory_pos,
                                               extra_memory)

    def decode(
        self,
        target: ImageFeatures,
        templates: TemplateMemory,
        text_embedding: torch.Tensor,
        mask_prompt: torch.Tensor | None = None,
        extra_points: tuple[torch.Tensor, torch.Tensor] | None = None,
        extra_memory: tuple[torch.Tensor, torch.Tensor] | None = None,
        location_prior: torch.Tensor | None = None,
    ) -> AssistantOutput:
        """Segment B encoded targets given their templates [B, K, ...] (see `forward`)."""
        fine = [(getattr(target, level), p) for level, p in zip(self.fine_levels, templates.prototypes, strict=True)]
        match = self.matcher(target.embedding, templates.embedding, templates.masks, fine)
        prompts = self.prompter(match.similarity, match.bg_similarity)
        mask_input = prompts.mask_logits
        prior = None
        if self.prior_gate is not None:
            prior = templates.masks.float().mean(1) if location_prior is None else location_prior.float()
            prior_prompt = _resize(prior, mask_input.shape[-2:]) * 2 - 1
            mask_input = 0.5 * (mask_input + prior_prompt * self.config.matching.mask_logit_scale)
        if mask_prompt is not None:
            mask_input = _resize(mask_prompt.float(), mask_input.shape[-2:])
        coords, labels = prompts.point_coords, prompts.point_labels
        if extra_points is not None:
            coords = torch.cat([coords, extra_points[0].to(coords)], dim=1)
            labels = torch.cat([labels, extra_points[1].to(labels)], dim=1)
        conditioned = self.condition(target, templates, extra_memory)
        heads = sam2_adapter.prompt_decoder(self.sam)
        sparse, dense = heads.encode((coords, labels), prompts.boxes, mask_input)
        tokens = torch.stack([self.prototype_proj(match.prototype), self.text_proj(text_embedding)], dim=1)
        sparse = torch.cat([sparse, tokens.to(sparse.dtype)], dim=1)
        low_res, iou, object_logits = heads.decode(conditioned, sparse, dense, multimask=True,
                                                   high_res_features=[target.s0, target.s1])
        low_res = low_res.float()
        logits = F.interpolate(low_res, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        if prior is not None:
            gate = self.prior_gate.float()
            logits = logits + gate * (_resize(prior, logits.shape[-2:]) * 2 - 1)
            low_res = low_res + gate * prior_prompt  # the prompt's grid is the low-res logits' grid
        return AssistantOutput(
            logits=logits,
            low_res_logits=low_res,
            iou=iou.float(),
            object_score_logits=object_logits.float(),
            best=iou.argmax(dim=-1),
            similarity=match.similarity,
            prompts=prompts,
        )

    def forward(
        self,
        target_images: torch.Tensor,
        template_images: torch.Tensor,
        template_masks: torch.Tensor,
        texts: list[str],
        mask_prompt: torch.Tensor | None = None,
        extra_points: tuple[torch.Tensor, torch.Tensor] | None = None,
        location_prior: torch.Tensor | None = None,
    ) -> AssistantOutput:
        """Differentiable forward for training.

        target_images   [B, 3, S, S] normalised (`intensity.normalize_for_sam`)
        template_images [B, K, 3, S, S] normalised, K >= 1
        template_masks  [B, K, 1, S, S] float/bool in [0, 1]
        texts           B non-empty strings (segment name or description)
        mask_prompt     optional [B, 1, H, W] mask logits (any H, W) replacing the
                        similarity-derived dense prompt (feedback rehearsal, stage 2)
        extra_points    optional (coords [B, P, 2] (x, y) pixels, labels [B, P]: 1 positive,
                        0 negative, -1 ignore) appended to the generated points
        location_prior  optional [B, 1, S, S] in [0, 1]: the templates' masks at the target's
                        relative position (used when `config.location_prior` > 0; default:
                        the mean of the K template masks)
        Returns an `AssistantOutput` (logits [B, 3, S, S], iou [B, 3], object score, best).
        """
        batch, count = template_images.shape[:2]
        size = self.image_size
        if target_images.shape != (batch, 3, size, size):
            raise ValueError(f"target_images: expected [{batch}, 3, {size}, {size}], got {list(target_images.shape)}")
        if template_images.shape[2:] != (3, size, size) or template_masks.shape != (batch, count, 1, size, size):
            raise ValueError(
                f"templates: expected images [{batch}, K, 3, {size}, {size}] and masks [{batch}, K, 1, {size}, "
                f"{size}], got {list(template_images.shape)} and {list(template_masks.shape)}"
            )
        if len(texts) != batch:
            raise ValueError(f"texts: expected {batch} strings, got {len(texts)}")
        features = self.encode(torch.cat([target_images, template_images.flatten(0, 1)]))
        memory = self.encode_templates(features[batch:], template_masks.flatten(0, 1))
        index = torch.arange(batch * count, device=target_images.device).view(batch, count)
        return self.decode(features[:batch], memory.gather(index), self.embed_text(texts), mask_prompt, extra_points,
                           location_prior=location_prior)

    def predict(self, *args, precision: str = "auto", **kwargs) -> AssistantOutput:
        """`forward` under `torch.inference_mode` and `device.autocast(precision)` ("auto": bf16
        on CUDA and on CPUs with bf16 instructions)."""
        with torch.inference_mode(), autocast(self.device, precision):
            return self.forward(*args, **kwargs)


def _resize(maps: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear (anti-aliased when shrinking) resize of maps [B, C, H, W] to `size`."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
