"""Atomic outputs: a set of files renamed together or not at all, modes kept, bad destinations refused."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

import pytest

from vessa.errors import InputError
from vessa.io import atomic_path, atomic_paths, check_output


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_set_is_renamed_only_when_every_file_is_written(tmp_path):
    first, second = tmp_path / "a.seg.nrrd", tmp_path / "sub" / "b.nrrd"
    first.write_text("old a")
    with pytest.raises(KeyboardInterrupt), atomic_paths([first, second]) as (tmp_first, tmp_second):
        assert tmp_first.name.endswith(".seg.nrrd") and tmp_second.parent == second.parent
        tmp_first.write_text("new a")
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, see vessa.cli) after the first file
    assert first.read_text() == "old a" and not second.exists()
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []
    with atomic_paths([first, second]) as (tmp_first, tmp_second):
        tmp_first.write_text("new a")
        tmp_second.write_text("new b")
    assert (first.read_text(), second.read_text()) == ("new a", "new b")
    assert leftovers(tmp_path) == []


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: a process started in the background by a shell
    without job control inherits SIGINT ignored, and then Ctrl-C raises nothing at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_during_the_renames_waits_until_the_set_is_complete(tmp_path, monkeypatch, python_sigint):
    dests = [tmp_path / "a.txt", tmp_path / "b.txt"]
    replace = os.replace

    def interrupted_replace(source, dest):
        replace(source, dest)
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the two renames

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt), atomic_paths(dests) as temporaries:
        for tmp in temporaries:
            tmp.write_text("new")
    assert [dest.read_text() for dest in dests] == ["new", "new"]


def test_an_interrupt_that_lands_on_another_thread_waits_too(tmp_path, monkeypatch, python_sigint):
    # the kernel hands a signal sent to the process to any thread that does not block it (torch's,
    # ITK's); its C handler then makes the main thread raise: blocking it in one thread is not enough
    dests = [tmp_path / "a.txt", tmp_path / "b.txt"]
    replace, release = os.replace, threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()

    def interrupted_replace(source, dest):
        replace(source, dest)
        signal.pthread_kill(worker.ident, signal.SIGINT)
        time.sleep(0.05)  # the main thread runs on, between the two renames, while the flag is set

    monkeypatch.setattr(os, "replace", interrupted_replace)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_paths(dests) as temporaries:
            for tmp in temporaries:
                tmp.write_text("new")
    finally:
        release.set()
        worker.join()
    assert [dest.read_text() for dest in dests] == ["new", "new"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_existing_output_keeps_its_mode_and_a_new_one_gets_the_umask_mode(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    with atomic_path(kept) as tmp:
        tmp.write_text("new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
    fresh = tmp_path / "fresh.txt"
    with atomic_path(fresh) as tmp:
        tmp.write_text("new")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_the_same_output_twice_is_refused(tmp_path):
    with pytest.raises(InputError, match="given twice"), atomic_paths([tmp_path / "a", tmp_path / "a"]):
        pass
    assert list(tmp_path.iterdir()) == []


def unwritable(folder, kind: str):
    """A destination that cannot be written, of the given kind."""
    (folder / "file").write_text("x")
    if kind == "folder":
        (folder / "out").mkdir()
        return folder / "out"
    if kind == "under a file":
        return folder / "file" / "out.nrrd"
    if kind == "deep under a file":
        return folder / "file" / "deeper" / "out.nrrd"
    os.chmod(folder / "file", 0o444)
    return folder / "file"


@pytest.mark.parametrize(("kind", "message"), [
    ("folder", "is a folder"),
    ("under a file", "is a file, not a folder"),
    ("deep under a file", "is a file, not a folder"),
    ("read-only", "the file is read-only"),
])
def test_check_output_refuses_what_cannot_be_written(tmp_path, kind, message):
    with pytest.raises(InputError, match=message):
        check_output(unwritable(tmp_path, kind), "--out")


def test_check_output_accepts_new_folders_and_writable_files(tmp_path):
    assert check_output(tmp_path / "new" / "deeper" / "out.nrrd", "--out") == tmp_path / "new" / "deeper" / "out.nrrd"
    (tmp_path / "old.nrrd").write_text("x")
    check_output(tmp_path / "old.nrrd", "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nrrd"]  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_check_output_refuses_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(InputError, match="no permission to write"):
        check_output(locked / "out.nrrd", "--out")
