"""The JSON-lines progress protocol: what ProgressWriter writes, parse_progress_line reads back."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from vessa.jobs import EVENTS, ProgressWriter, parse_progress_line


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_every_event_round_trips_one_line_each():
    stream = io.StringIO()
    writer = ProgressWriter("stage1", total=100, stream=stream)
    written = [
        writer.started(0, method="vessa"),
        writer.progress(10, {"loss": 0.4, "dice": 0.7}),
        writer.checkpoint(10, "/jobs/a/ckpt_step10.pt"),
        writer.log("hello"),
        writer.finished(100, "/jobs/a/ckpt_step100.pt"),
        writer.cancelled(50, None),
        writer.error("loss became NaN at step 3"),
    ]
    parsed = [parse_progress_line(line) for line in lines(stream)]
    assert parsed == written
    assert [event["event"] for event in parsed] == list(EVENTS)
    assert parsed[1]["stage"] == "stage1" and parsed[1]["step"] == 10 and parsed[1]["total"] == 100
    assert parsed[1]["loss"] == 0.4 and parsed[1]["dice"] == 0.7
    assert parsed[2]["path"] == "/jobs/a/ckpt_step10.pt" and parsed[3]["message"] == "hello"
    assert parsed[4]["checkpoint"].endswith("ckpt_step100.pt") and parsed[6]["message"].startswith("loss")


def test_non_finite_and_array_scalars_become_valid_json():
    stream = io.StringIO()
    ProgressWriter("stage2", 5, stream=stream).progress(
        1, {"loss": float("nan"), "dice": np.float32(0.5), "lr": torch.tensor(0.25), "x": float("inf")})
    event = json.loads(lines(stream)[0])  # strict JSON: no NaN/Infinity tokens
    assert event["loss"] is None and event["x"] is None and event["dice"] == 0.5 and event["lr"] == 0.25


@pytest.mark.parametrize("line", [
    "", "   ", "plain text from a library", "{not json", "[1, 2]", '"a string"', "42",
    '{"event": "no-such-event", "step": 1}', '{"step": 3}', '{"event": 5}',
    "\x00\xff garbage", b"\xff\xfe{}",
])
def test_garbage_lines_give_none(line):
    assert parse_progress_line(line) is None


def test_bytes_and_surrounding_whitespace_are_accepted():
    assert parse_progress_line(b'  {"event": "log", "message": "m"}\r\n') == {"event": "log", "message": "m"}


def test_eta_is_a_moving_average_of_step_time():
    clock, stream = FakeClock(), io.StringIO()
    writer = ProgressWriter("stage1", total=100, stream=stream, smoothing=0.5, clock=clock)
    writer.started(0)
    clock.now = 10.0
    assert writer.progress(10, {})["eta_s"] == pytest.approx(90.0)    # 1 s/step, 90 steps left
    clock.now = 40.0                                                    # 3 s/step for the next 10
    assert writer.progress(20, {})["eta_s"] == pytest.approx(2.0 * 80)  # average 0.5*1 + 0.5*3 = 2 s/step
    assert writer.progress(20, {})["eta_s"] == pytest.approx(160.0)    # no new steps: unchanged


def test_eta_is_null_before_any_step_was_timed():
    writer = ProgressWriter("stage1", total=10, stream=io.StringIO(), clock=FakeClock())
    assert writer.progress(0, {"loss": 1.0})["eta_s"] is None


def test_disabled_writer_on_other_ranks_writes_nothing():
    stream = io.StringIO()
    writer = ProgressWriter("stage1", 10, stream=stream, enabled=False)
    writer.started(0)
    writer.progress(1, {"loss": 1.0})
    assert stream.getvalue() == ""


def test_reserved_metric_names_and_unknown_events_are_rejected():
    writer = ProgressWriter("stage1", 10, stream=io.StringIO())
    with pytest.raises(ValueError, match="reserved"):
        writer.progress(1, {"step": 3})
    with pytest.raises(ValueError, match="unknown progress event"):
        writer.emit("paused")
