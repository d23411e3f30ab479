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

import logging
from pathlib import Path
from typing import Any

import torch

from vessa.errors import CheckpointError
from vessa.io import atomic_path
from vessa.model.assistant import TemplateAssistant
from vessa.model.config import ModelConfig
from vessa.model.sam2_adapter import sam2_variant
from vessa.model.state_file import load_strict, read_checkpoint, weights_sha256

log = logging.getLogger(__name__)

FORMAT = "vessa-stage1/1"
OFFICIAL_IMAGE_SIZE = 1024


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
    load_strict(assistant, state, path)
    return assistant


def load_sam2_official(assistant: TemplateAssistant, path: str | Path) -> None:
    """Load an official SAM2.1 checkpoint (`{"model": state_dict}`) into `assistant.sam`.

    Strict: every sam2 key must be present with the right shape (the variant must match).
    """
    content = read_checkpoint(path)
    if "model" not in content:
        raise CheckpointError(f"{path}: not an official SAM2 checkpoint (no 'model' entry)")
    _load_sam2_state(assistant, content["model"], path)


def _load_sam2_state(assistant: TemplateAssistant, state: dict[str, torch.Tensor], path: str | Path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the 'model' entry is not a state dict")
    load_strict(assistant.sam, state, path)
