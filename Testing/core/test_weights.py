"""vessa.weights: registry, cache and `vessa weights ...`, with a local HTTP server for fetches."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from local_http import FileServer

from vessa import cli
from vessa.download import sha256_file
from vessa.errors import CheckpointError, ChecksumError
from vessa.weights import OFFICIAL, SHIPPED, KnownWeights, WeightsRegistry, resolve_weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("VESSA_CACHE_DIR", str(folder))
    return folder


def save_checkpoint(path, value: float):
    torch.save({"model": {"weight": torch.full((4,), value)}}, path)
    return path


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "mine.pt", 1.0)


def run(capsys, *argv):
    code = cli.main(["weights", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def cached_files(cache):
    folder = cache / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_official_entries():
    assert [e.name for e in OFFICIAL] == [
        f"sam2.1_hiera_{v}" for v in ("tiny", "small", "base_plus", "large")
    ]
    for entry in OFFICIAL:
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{entry.name}.pt"
        assert re.fullmatch("[0-9a-f]{64}", entry.sha256)
        assert entry.kind == "sam2" and entry.size > 100e6


def test_add_list_path_verify(cache, checkpoint, capsys):
    code, out, _ = run(capsys, "add", checkpoint, "--name", "liver-v1")
    digest = sha256_file(checkpoint)
    cached = cache / "weights" / "liver-v1.pt"
    assert code == 0 and f"added liver-v1 (vessa, sha256 {digest})" in out
    assert cached.read_bytes() == checkpoint.read_bytes()
    record = json.loads((cache / "weights" / "registry.json").read_text())["weights"][0]
    assert record["name"] == "liver-v1" and record["sha256"] == digest and record["url"] is None

    code, out, _ = run(capsys, "list")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows["liver-v1"][1:3] == ["vessa", "yes"] and digest[:12] in rows["liver-v1"]
    assert rows["sam2.1_hiera_tiny"][1:3] == ["sam2", "no"] and "149 MiB" in out

    assert run(capsys, "path", "liver-v1") == (0, f"{cached}\n", "")
    code, out, _ = run(capsys, "verify", "liver-v1")
    assert code == 0 and out == f"liver-v1: ok {cached}\n"
    code, out, _ = run(capsys, "verify", checkpoint)
    assert code == 0 and "this is liver-v1 (vessa)" in out
    code, out, _ = run(capsys, "verify")  # every available checkpoint: ours plus the shipped ones
    assert code == 0 and out.endswith(f"{1 + len(SHIPPED)} cached checkpoints verified\n")
    assert resolve_weights("liver-v1") == cached


def test_corrupt_cached_file_detected(cache, checkpoint, capsys):
    assert run(capsys, "add", checkpoint)[0] == 0
    cached = cache / "weights" / "mine.pt"
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF
    cached.write_bytes(bytes(data))

    code, _, err = run(capsys, "verify", "mine")
    assert code == 2
    assert err.startswith("vessa weights: error: ") and f"{cached}: SHA-256" in err and "'mine'" in err
    assert err.count("\n") == 1
    code, out, err = run(capsys, "verify")
    assert code == 2 and "mine: FAILED" in out and f"1 of {1 + len(SHIPPED)} cached checkpoints failed: mine" in err
    with pytest.raises(CheckpointError, match="'mine' \\(added from a local file\\) is corrupt"):
        resolve_weights("mine")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "{tmp}/absent.pt"], "absent.pt: no such checkpoint file"),
        (["add", "{tmp}/notes.txt"], "notes.txt: not a PyTorch checkpoint"),
        (["add", "{tmp}/mine.pt", "--name", "sam2.1_hiera_tiny"], "'sam2.1_hiera_tiny' is a built-in"),
        (["add", "{tmp}/mine.pt", "--name", "../evil"], "'../evil': a checkpoint name uses letters"),
        (["verify", "{tmp}/other.pt"], "other.pt: SHA-256 .* matches no known checkpoint"),
        (["verify", "{tmp}/absent.pt"], "absent.pt: no such file, and not a known checkpoint"),
        (["path", "sam2.1_hiera_large"], "not cached; run: vessa weights fetch sam2.1_hiera_large"),
        (["path", "nope"], "unknown checkpoint 'nope' \\(known: sam2.1_hiera_tiny,"),
        (["fetch", "nope"], "unknown checkpoint 'nope'"),
    ],
)
def test_bad_input_one_line_error_and_no_file(cache, checkpoint, tmp_path, capsys, argv, message):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    save_checkpoint(tmp_path / "other.pt", 2.0)
    code, out, err = run(capsys, *(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vessa weights: error: ")
    assert re.search(message, err)
    assert cached_files(cache) == []


@pytest.fixture
def server():
    with FileServer() as running:
        yield running


def test_fetch_downloads_once_and_repairs_corrupt_cache(cache, checkpoint, server, capsys):
    payload = checkpoint.read_bytes()
    server.files["/remote.pt"] = payload
    registry = WeightsRegistry()
    digest = hashlib.sha256(payload).hexdigest()
    registry.register(KnownWeights("remote", server.url("/remote.pt"), digest, "vessa", "lab server"))

    code, out, _ = run(capsys, "fetch", "remote", "--no-progress")
    cached = cache / "weights" / "remote.pt"
    assert code == 0 and out == f"{cached}\n" and cached.read_bytes() == payload
    assert resolve_weights("remote") == cached
    assert len(server.requests) == 1  # cached: no second download

    cached.write_bytes(payload[:-1] + b"?")
    assert registry.fetch("remote", progress=False) == cached
    assert cached.read_bytes() == payload and len(server.requests) == 2


def test_fetch_with_wrong_hash_keeps_nothing(cache, checkpoint, server, capsys):
    server.files["/remote.pt"] = checkpoint.read_bytes()
    WeightsRegistry().register(KnownWeights("remote", server.url("/remote.pt"), "1" * 64, "vessa", ""))
    code, _, err = run(capsys, "fetch", "remote", "--no-progress")
    assert code == 2 and "has SHA-256" in err and "file deleted" in err
    assert cached_files(cache) == ["registry.json"]


def test_shipped_checkpoint_is_used_in_place(tmp_path, checkpoint):
    data = tmp_path / "data"
    data.mkdir()
    shipped = data / "starter.pt"
    shipped.write_bytes(checkpoint.read_bytes())
    entry = KnownWeights(
        "starter", None, sha256_file(checkpoint), "vessa", "starter", packaged_file="starter.pt"
    )
    registry = WeightsRegistry(tmp_path / "cache", builtin=(entry,), data_dir=data)
    assert registry.fetch("starter") == shipped and registry.check(entry) == shipped
    with pytest.raises(CheckpointError, match="'starter' is a built-in checkpoint name"):
        registry.add_file(checkpoint, name="starter")
    shipped.write_bytes(b"damaged")
    with pytest.raises(ChecksumError, match="registered for 'starter'"):
        registry.check(entry)
    with pytest.raises(CheckpointError, match="shipped with VESSA\\) is corrupt"):
        registry.fetch("starter")


def test_resolve_weights_accepts_existing_path(cache, checkpoint):
    assert resolve_weights(checkpoint) == checkpoint
    assert resolve_weights(str(checkpoint)) == checkpoint
    with pytest.raises(CheckpointError, match="missing.pt: no such file, and not a known checkpoint"):
        resolve_weights(checkpoint.with_name("missing.pt"))


def test_corrupt_registry_file_is_named(cache, capsys):
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "registry.json").write_text("{not json")
    code, _, err = run(capsys, "list")
    assert code == 2 and "registry.json: corrupt weights registry" in err
