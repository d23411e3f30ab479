"""Frozen text tower: MiniLM embeddings, per-string cache, bad text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vessa.errors import CheckpointError, InputError
from vessa.model import text
from vessa.model.config import TextConfig
from vessa.model.text import TABLE_ENV, TextEncoder, write_embedding_table


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(TextConfig())


def test_minilm_similarity_follows_meaning(encoder):
    left, right, liver = F.normalize(encoder.encode(["left hippocampus", "right hippocampus", "liver"]), dim=-1)
    assert encoder.dim == 384
    assert float(left @ right) > 0.8
    assert float(left @ right) > float(left @ liver) + 0.5


def counting_tower(monkeypatch, config: TextConfig) -> list[int]:
    """Make the tower of `config` count the strings it embeds (in the returned list)."""
    calls = []
    tower, tokenizer, dim = text._load_tower(config.kind, config.model, config.pretrained)

    def counting(tokens):
        calls.append(tokens.shape[0])
        return tower(tokens)

    monkeypatch.setattr(text, "_load_tower", lambda *_: (counting, tokenizer, dim))
    return calls


def test_each_string_is_encoded_once(encoder, monkeypatch):
    calls = counting_tower(monkeypatch, encoder.config)
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


def test_an_embedding_table_replaces_the_tower_for_its_strings(encoder, tmp_path, monkeypatch):
    path = write_embedding_table(TextConfig(), ["liver", "left kidney", "liver"], tmp_path / "names.pt")
    expected = encoder.encode(["left kidney", "liver"])
    calls = counting_tower(monkeypatch, TextConfig())
    monkeypatch.setenv(TABLE_ENV, str(path))
    tabled = TextEncoder(TextConfig())  # the table from the environment, as in a training job
    assert tabled.dim == 384 and calls == []
    assert torch.equal(tabled.encode(["left kidney", "liver"]), expected)
    assert calls == []  # the tower was not used for strings in the table
    tabled.encode(["spleen"])
    assert calls == [1]  # a string outside the table goes to the tower


def test_a_table_of_another_tower_or_a_bad_file_is_refused(tmp_path):
    path = write_embedding_table(TextConfig(), ["liver"], tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match="made by text tower"):
        TextEncoder(TextConfig(kind="open_clip", model="ViT-B-32", pretrained="weights.bin"), table=path)
    (tmp_path / "bad.pt").write_bytes(b"not a table")
    with pytest.raises(CheckpointError, match="unreadable"):
        TextEncoder(TextConfig(), table=tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="file not found"):
        TextEncoder(TextConfig(), table=tmp_path / "missing.pt")
