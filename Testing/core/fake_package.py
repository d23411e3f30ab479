"""A fake npm package for the registry tests: .tgz builder, a fake `npm` executable, a converter."""

from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path

import torch


def make_tgz(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A gzipped tar with `files` (member name -> bytes) and symlinks `links` (name -> target)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def install_fake_npm(
    bin_dir: Path, tarball: Path | None, log: Path, exit_code: int = 0, message: str = "", sleep: float = 0
) -> Path:
    """Write an executable `npm` into `bin_dir` that logs its arguments to `log`, then (after
    `sleep` s) copies `tarball` into the `--pack-destination` folder and exits with `exit_code`,
    printing `message` on stderr."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    copy = f'cp {shlex.quote(str(tarball))} "$dest/"' if tarball else ":"
    script = f"""#!/bin/sh
echo "$@" >> {shlex.quote(str(log))}
dest=""; previous=""
for arg in "$@"; do
  [ "$previous" = "--pack-destination" ] && dest="$arg"
  previous="$arg"
done
sleep {sleep}
{copy}
[ -n {shlex.quote(message)} ] && echo {shlex.quote(message)} >&2
exit {exit_code}
"""
    npm = bin_dir / "npm"
    npm.write_text(script)
    npm.chmod(0o755)
    return npm


def state_of(*contents: bytes) -> dict[str, torch.Tensor]:
    """What `convert` makes of files with these contents: each as a uint8 tensor, keyed file0, file1, ..."""
    return {f"file{i}": torch.tensor(list(data), dtype=torch.uint8) for i, data in enumerate(contents)}


def convert(*files: Path) -> dict[str, torch.Tensor]:
    """The fake converter (`fake_package:convert`)."""
    return state_of(*(Path(file).read_bytes() for file in files))
