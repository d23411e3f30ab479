"""vessa.download against a real HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest
from local_http import FileServer

from vessa import download as dl
from vessa.errors import ChecksumError, DownloadError

PAYLOAD = np.random.default_rng(0).bytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with FileServer() as running:
        running.files["/ckpt.pt"] = PAYLOAD
        yield running


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_sha256_file_known_answer(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(dl, "CHUNK_BYTES", chunk)
    (tmp_path / "abc").write_bytes(b"abc")
    assert dl.sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_download_with_hash_and_progress(server, tmp_path, capsys):
    dest = tmp_path / "sub" / "ckpt.pt"
    assert dl.download(server.url("/ckpt.pt"), dest, sha256=DIGEST.upper(), progress=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["ckpt.pt"]
    assert server.requests == [("/ckpt.pt", None)]
    assert "ckpt.pt" in capsys.readouterr().err  # the tqdm bar


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "ckpt.pt"
    server.drop_after = 100_000
    with pytest.raises(DownloadError, match=r"closed after 100000 of 300000 bytes.*resume"):
        dl.download(server.url("/ckpt.pt"), dest, sha256=DIGEST, progress=False)
    assert not dest.exists()
    assert dl.part_path(dest).stat().st_size == 100_000

    dl.download(server.url("/ckpt.pt"), dest, sha256=DIGEST, progress=False)
    assert server.requests[-1] == ("/ckpt.pt", "bytes=100000-")
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["ckpt.pt"]


def test_resume_when_server_ignores_range(server, tmp_path):
    dest = tmp_path / "ckpt.pt"
    dl.part_path(dest).write_bytes(PAYLOAD[:1000])
    server.ignore_range = True
    dl.download(server.url("/ckpt.pt"), dest, sha256=DIGEST, progress=False)
    assert server.requests == [("/ckpt.pt", "bytes=1000-")]
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_longer_than_file_restarts(server, tmp_path):
    dest = tmp_path / "ckpt.pt"
    dl.part_path(dest).write_bytes(b"x" * (len(PAYLOAD) + 10))
    dl.download(server.url("/ckpt.pt"), dest, sha256=DIGEST, progress=False)
    assert server.requests == [("/ckpt.pt", f"bytes={len(PAYLOAD) + 10}-"), ("/ckpt.pt", None)]
    assert dest.read_bytes() == PAYLOAD


def test_wrong_hash_is_refused_and_nothing_kept(server, tmp_path):
    dest = tmp_path / "ckpt.pt"
    with pytest.raises(ChecksumError, match=rf"{server.url('/ckpt.pt')}.*expected {'0' * 64}"):
        dl.download(server.url("/ckpt.pt"), dest, sha256="0" * 64, progress=False)
    assert leftovers(tmp_path) == []


def test_404_names_url_and_status(server, tmp_path):
    url = server.url("/missing.pt")
    with pytest.raises(DownloadError, match=rf"{url}: HTTP 404"):
        dl.download(url, tmp_path / "missing.pt", progress=False)
    assert leftovers(tmp_path) == []


def test_unreachable_server(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.pt"
    with pytest.raises(DownloadError, match=f"could not download {url}"):
        dl.download(url, tmp_path / "x.pt", progress=False, timeout=5)
    assert leftovers(tmp_path) == []


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "cache"))
    assert dl.cache_dir() == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()
