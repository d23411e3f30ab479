"""CancelFlag (SIGTERM/SIGINT -> a polled flag) and the job folder's status.json."""

from __future__ import annotations

import json
import os
import signal

import pytest

from vessa.jobs import EXIT_CANCELLED, CancelFlag, StatusFile, read_status


def test_exit_code_for_cancel_is_3():
    assert EXIT_CANCELLED == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_sets_the_flag_second_interrupts(signum):
    before = signal.getsignal(signum)
    with CancelFlag() as flag:
        assert not flag.requested
        os.kill(os.getpid(), signum)
        assert flag.requested and flag.signal_name == signal.Signals(signum).name
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) == before  # handlers restored


def test_request_without_a_signal():
    flag = CancelFlag()
    flag.request()
    assert flag.requested and flag.signal_name == "request"


def test_status_is_written_atomically_and_read_back(tmp_path):
    status = StatusFile(tmp_path)
    status.update("running", step=0, total=10, last_checkpoint=None)
    status.update(step=5, last_checkpoint=str(tmp_path / "ckpt_step5.pt"))
    written = read_status(tmp_path)
    assert written["state"] == "running" and written["step"] == 5 and written["total"] == 10
    assert written["last_checkpoint"].endswith("ckpt_step5.pt")
    assert written["pid"] == os.getpid() and written["updated"]
    status.update("cancelled")
    assert read_status(tmp_path)["state"] == "cancelled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary files left


def test_status_rejects_unknown_states_and_other_ranks_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="running, finished, cancelled, failed"):
        StatusFile(tmp_path).update("paused")
    StatusFile(tmp_path, enabled=False).update("running")
    assert read_status(tmp_path) is None


@pytest.mark.parametrize("content", ["{broken", "[]", json.dumps({"state": "weird"})])
def test_unreadable_status_reads_as_none(tmp_path, content):
    (tmp_path / "status.json").write_text(content)
    assert read_status(tmp_path) is None
