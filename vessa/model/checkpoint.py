"""Saving and loading model weights: VESSA checkpoints and official SAM2.1 checkpoints.

A VESSA stage-1 checkpoint is one `torch.save` file holding only plain types and tensors,
so it loads with `torch.load(weights_only=True)`:
    {"format": "vessa-stage1/1", "config": ModelConfig.to_dict(), "state_dict": {...},
     "sha256": hex digest of the weights (`weights_sha256`), "metadata": {...}}
The state dict is `TemplateAssistant.state_dict()` (sam2 model + token projections; the
frozen text tower is named by the config, not stored). Loading checks the format, the
digest and the exact key set and shapes; any problem raises CheckpointError naming the
file. Official SAM2.1 files (`{"model": sam2 state_dict}`) load into the sam2 part.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from vessa.errors import CheckpointError, torch_load_reason
from vessa.io import atomic_path
from vessa.model.assistant import TemplateAssistant
from vessa.model.config import SAM2_CONFIGS, ModelConfig

log = logging.getLogger(__name__)

FORMAT = "vessa-stage1/1"
OFFICIAL_IMAGE_SIZE = 1024
# Hiera trunks of the sam2.1 configs: (number of blocks, first embedding dim) -> variant.
_HIERA_VARIANTS = {(12, 96): "tiny", (16, 96): "small", (24, 112): "base_plus", (48, 144): "large"}


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys with each tensor's dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    assistant: TemplateAssistant,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `assistant` atomically to `path` (metadata: plain JSON-like values). With `dtype`
    (e.g. torch.float16, to ship a small file) floating-point weights are stored in it; loading
    casts them back to the model's float32."""
    state = {key: value.detach().cpu().clone() for key, value in assistant.state_dict().items()}
    if dtype is not None:
        state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    payload = {
        "format": FORMAT,
        "config": assistant.config.to_dict(),
        "state_dict": state,
        "sha256": weights_sha256(state),
        "metadata": dict(metadata or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a checkpoint file (`weights_only=True`); CheckpointError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler raises many types on arbitrary bytes
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or not a torch.save file: {torch_load_reason(error)})"
        ) from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(content).__name__}, not a dict)")
    return content


def load_assistant(path: str | Path) -> TemplateAssistant:
    """A `TemplateAssistant` from a VESSA checkpoint, or from an official SAM2.1 checkpoint
    (variant inferred from the weights, 1024 px; token projections stay zero = untrained)."""
    content = read_checkpoint(path)
    if "model" in content and "format" not in content:
        config = ModelConfig(sam2_config=sam2_variant(content["model"], path), image_size=OFFICIAL_IMAGE_SIZE)
        assistant = TemplateAssistant(config)
        _load_sam2_state(assistant, content["model"], path)
        log.warning(
            "%s: official SAM2.1 weights; VESSA's matching/text token layers are untrained "
            "(zero), so this behaves as SAM2 driven by template-matched prompts",
            path,
        )
        return assistant
    if content.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {content.get('format')!r} (expected {FORMAT!r} or an official "
            "SAM2.1 {'model': ...} file)"
        )
    missing = sorted({"config", "state_dict", "sha256"} - set(content))
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    state = content["state_dict"]
    if weights_sha256(state) != content["sha256"]:
        raise CheckpointError(f"{path}: weights do not match their SHA-256 (file corrupt or edited)")
    try:
        config = ModelConfig.from_dict(content["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid model config ({error})") from None
    assistant = TemplateAssistant(config)
    _load_strict(assistant, state, path)
    return assistant


def load_sam2_official(assistant: TemplateAssistant, path: str | Path) -> None:
    """Load an official SAM2.1 checkpoint (`{"model": state_dict}`) into `assistant.sam`.

    Strict: every sam2 key must be present with the right shape (the variant must match).
    """
    content = read_checkpoint(path)
    if "model" not in content:
        raise CheckpointError(f"{path}: not an official SAM2 checkpoint (no 'model' entry)")
    _load_sam2_state(assistant, content["model"], path)


def sam2_variant(state_dict: dict[str, torch.Tensor], path: str | Path) -> str:
    """sam2.1 config name of an official state dict, from its Hiera depth and width."""
    blocks = {key.split(".")[3] for key in state_dict if key.startswith("image_encoder.trunk.blocks.")}
    embed = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    variant = _HIERA_VARIANTS.get((len(blocks), None if embed is None else int(embed.shape[0])))
    if variant is None:
        raise CheckpointError(f"{path}: weights match no sam2.1 Hiera variant ({sorted(_HIERA_VARIANTS.values())})")
    return SAM2_CONFIGS[variant]


def _load_sam2_state(assistant: TemplateAssistant, state: dict[str, torch.Tensor], path: str | Path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the 'model' entry is not a state dict")
    _load_strict(assistant.sam, state, path)


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """load_state_dict with the key and shape checks reported as one CheckpointError line."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the model: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
