"""HTTP downloads that resume, show progress and check SHA-256, with the standard library only.

A download goes to `<dest>.part` next to `dest`. An interrupted download leaves that file in
place and the next call asks the server for the rest (HTTP Range). The file is renamed onto
`dest` only once it is complete and its SHA-256 matches; on a mismatch it is deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import platformdirs
from tqdm import tqdm

from vessa.errors import ChecksumError, DownloadError

CHUNK_BYTES = 1 << 20
CACHE_ENV = "VESSA_CACHE_DIR"


def cache_dir() -> Path:
    """VESSA's per-user cache folder (created if missing); the env var VESSA_CACHE_DIR overrides it."""
    folder = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("vessa"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's contents as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(dest: str | Path) -> Path:
    """Where `download` keeps the unfinished file for `dest`."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest`, resuming an earlier partial download, and return `dest`.

    `sha256`: expected hex digest; on a mismatch the download is deleted and ChecksumError is
    raised. HTTP errors and network failures raise DownloadError naming the URL; after a
    network failure the partial file is kept so that the next call resumes it. `timeout` is
    in seconds per blocking socket operation. `progress` shows a tqdm bar on stderr.
    """
    dest = Path(dest)
    part = part_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with urlopen(Request(url, headers=headers), timeout=timeout) as response:
            if response.status != 206:  # a full body: the server ignored or was not asked a Range
                offset = 0
            remaining = response.length
            total = None if remaining is None else offset + remaining
            with (
                open(part, "ab" if offset else "wb") as file,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    bar.update(len(chunk))
    except HTTPError as error:
        if error.code == 416 and offset:  # the partial file is not a prefix of this resource
            part.unlink()
            return download(url, dest, sha256, progress, timeout)
        raise DownloadError(f"could not download {url}: HTTP {error.code} {error.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"could not download {url}: {reason}{_resume_note(part)}") from None
    received = part.stat().st_size
    if total is not None and received != total:
        raise DownloadError(
            f"could not download {url}: connection closed after {received} of {total} bytes"
            f"{_resume_note(part)}"
        )
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256.lower():
            part.unlink()
            raise ChecksumError(
                f"download of {url} has SHA-256 {actual}, expected {sha256.lower()}; file deleted"
            )
    os.replace(part, dest)
    return dest


def _resume_note(part: Path) -> str:
    if part.exists() and part.stat().st_size:
        return f" ({part.stat().st_size} bytes kept in {part}; run again to resume)"
    return ""
