"""Write files so that a reader never sees a partial file, nor half of a set of outputs.

Each output is written to a temporary file next to it, and the temporaries are renamed onto
their destinations only when all of them are complete. An existing destination keeps its
permission bits; `check_output` refuses, before any work, a destination that cannot be
written (a folder, a path under a file, a read-only file, a folder we may not write in).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from vessa.errors import InputError

# held back while a set of temporaries is renamed, so an interrupt cannot split the set
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(dest: Path) -> int:
    """The permission bits `dest` has, or those a plain open() would give a new file."""
    try:
        return stat.S_IMODE(dest.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def is_read_only(path: Path) -> bool:
    """True for an existing file that nobody may write (no write bit) or that we may not write."""
    return stat.S_IMODE(path.stat().st_mode) & 0o222 == 0 or not os.access(path, os.W_OK)


def check_output(dest: str | os.PathLike, what: str) -> Path:
    """`dest` as a Path; InputError naming `what` unless a file can be written there.

    Refused: an existing folder, a path under a file, an existing read-only file (it is not
    replaced), and a folder we may not write in. Missing folders are fine (they are created).
    """
    dest = Path(dest)
    if dest.is_dir():
        raise InputError(f"{what} {dest}: is a folder, not a file name")
    if dest.exists() and is_read_only(dest):
        raise InputError(f"{what} {dest}: the file is read-only; make it writable or choose another name")
    folder = dest.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{what} {dest}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{what} {dest}: no permission to write in {folder}")
    return dest


def _temporary_next_to(dest: Path) -> Path:
    """An empty private file next to `dest` whose name keeps `dest`'s suffixes (``.seg.nrrd``,
    ``.nii.gz``), so writers that choose the format from the file name work unchanged."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name.split('.')[0]}-", suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT / SIGTERM that arrive in the block are handled after it, by the handlers they had.

    Python runs signal handlers in the main thread only, so their Python-level handlers are
    swapped for one that notes the signal (blocking the signal with `pthread_sigmask` is not
    enough: it blocks one thread, and the kernel hands a signal sent to the process to any
    other, e.g. a torch or ITK worker, whose C handler still makes the main thread raise).
    Elsewhere than the main thread nothing interrupts the block, and it runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.getsignal(number) for number in _DEFERRED_SIGNALS}
    swapped = [number for number, handler in previous.items() if handler is not None]  # None: set outside Python
    for number in swapped:
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number in swapped:
            signal.signal(number, previous[number])
        for number in received:
            signal.raise_signal(number)


@contextlib.contextmanager
def atomic_paths(dests: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield one temporary path next to each of `dests`; rename them all onto their
    destinations only if the block succeeds (SIGINT/SIGTERM wait until the renames are done),
    and remove them all otherwise (an exception, Ctrl-C, or SIGTERM turned into one)."""
    dests = [Path(dest) for dest in dests]
    if len(set(dests)) != len(dests):
        raise InputError(f"the same output file is given twice: {', '.join(map(str, dests))}")
    temporaries: list[Path] = []
    try:
        for dest in dests:
            temporaries.append(_temporary_next_to(dest))
        yield temporaries
        with _signals_deferred():
            for tmp, dest in zip(temporaries, dests, strict=True):
                # mkstemp makes the file private (0600); give it the mode the destination has.
                os.chmod(tmp, _mode_for(dest))
            for tmp, dest in zip(temporaries, dests, strict=True):
                os.replace(tmp, dest)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds."""
    with atomic_paths([dest]) as (tmp,):
        yield tmp
