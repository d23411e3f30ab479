"""Frozen text tower: MiniLM embeddings, per-string cache, bad text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vessa.errors import CheckpointError, InputError
from vessa.model.config import TextConfig
from vessa.model.text import TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextConfig())


def test_minilm_similarity_follows_meaning(encoder):
    left, right, liver = F.normalize(encoder.encode(["left hippocampus", "right hippocampus", "liver"]), dim=-1)
    assert encoder.dim == 384
    assert float(left @ right) > 0.8
    assert float(left @ right) > float(left @ liver) + 0.5


def test_each_string_is_encoded_once(encoder, monkeypatch):
    calls = []
    tower = encoder._tower

    def counting(tokens):
        calls.append(tokens.shape[0])
        return tower(tokens)

    monkeypatch.setattr(encoder, "_tower", counting)
    first = encoder.encode(["spleen", "pancreas", "spleen"])
    second = encoder.encode(["pancreas", "spleen"])
    assert calls == [2]  # one tower call for the two new strings, none for the repeat
    assert first.shape == (3, 384) and first.dtype == torch.float32
    assert torch.equal(first[0], first[2]) and torch.equal(second[0], first[1])
    assert not first.requires_grad


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_is_an_input_error(encoder, text):
    with pytest.raises(InputError, match="non-empty"):
        encoder.encode(["liver", text])


def test_open_clip_tower_needs_local_weights(tmp_path):
    with pytest.raises(CheckpointError, match="pretrained weights file is required"):
        TextEncoder(TextConfig(kind="open_clip", model="ViT-B-32"))
    with pytest.raises(CheckpointError, match="file not found"):
        TextEncoder(TextConfig(kind="open_clip", model="ViT-B-32", pretrained=str(tmp_path / "missing.bin")))
