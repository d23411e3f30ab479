"""Reading and writing weight files and checking state dicts, with torch only (no model imports).

`weights_sha256` is the content digest stored in VESSA's weight files: it depends on the
tensors alone, not on how `torch.save` laid out the file. A weight file (`save_weights_file`)
is `{"format": str, "state_dict": {...}, "sha256": weights_sha256, "metadata": {...}}`, plain
types only, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from vessa.errors import CheckpointError, torch_load_reason


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys with each tensor's dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


def save_weights_file(
    state_dict: dict[str, torch.Tensor], path: str | Path, file_format: str, metadata: dict[str, Any]
) -> Path:
    """Write `state_dict` atomically as a weight file of `file_format`, with its digest and `metadata`."""
    from vessa.io.atomic import atomic_path

    state = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    payload = {"format": file_format, "state_dict": state, "sha256": weights_sha256(state), "metadata": dict(metadata)}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_weights_file(path: str | Path, file_format: str) -> dict[str, Any]:
    """The content of a weight file of `file_format`, after checking that its weights match their digest."""
    content = read_checkpoint(path)
    if content.get("format") != file_format:
        raise CheckpointError(f"{path}: weight file format {content.get('format')!r}, expected {file_format!r}")
    state = content.get("state_dict")
    if not isinstance(state, dict) or weights_sha256(state) != content.get("sha256"):
        raise CheckpointError(f"{path}: weights do not match their SHA-256 (file corrupt or edited)")
    return content


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
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
