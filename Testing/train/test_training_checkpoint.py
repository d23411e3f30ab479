"""Training checkpoints: atomic saves, weights_only loads, RNG states, keep-last-K, clear errors."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch
from torch import nn

from vessa.errors import CheckpointError
from vessa.train import training_checkpoint as ckpt
from vessa.train.training_checkpoint import (
    TrainingState,
    capture_rng,
    find_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    restore_rng,
    save_checkpoint,
)


def make_state(step: int) -> TrainingState:
    torch.manual_seed(step)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    return TrainingState(step=step, models={"student": model.state_dict()}, optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), objective={"teacher": model.state_dict()},
                         rng=[capture_rng()], config={"stage": "stage2", "options": {"a": [1, 2]}},
                         best_metric=0.5)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_loads_with_weights_only(tmp_path):
    state = make_state(7)
    path = save_checkpoint(state, tmp_path)
    assert path == tmp_path / "ckpt_step7.pt"
    raw = torch.load(path, weights_only=True)  # nothing in the file needs pickle's full power
    assert raw["format"] == "vessa-training-state" and raw["step"] == 7
    loaded = load_checkpoint(path)
    assert loaded.step == 7 and loaded.best_metric == 0.5 and loaded.config == state.config
    for key, value in state.models["student"].items():
        assert torch.equal(loaded.models["student"][key], value)
    assert loaded.optimizer["param_groups"][0]["lr"] == state.optimizer["param_groups"][0]["lr"]
    assert loaded.scheduler["last_epoch"] == 0


def test_rng_states_restore_python_numpy_and_torch():
    saved = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(saved)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == again[0] and expected[1] == again[1] and torch.equal(expected[2], again[2])


def test_rng_state_survives_a_weights_only_file(tmp_path):
    state = make_state(1)
    state.rng = [capture_rng()]
    expected = (random.random(), np.random.normal(), torch.randn(2))  # gauss caches included
    restore_rng(load_checkpoint(save_checkpoint(state, tmp_path)).rng[0])
    again = (random.random(), np.random.normal(), torch.randn(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_last_and_best_point_at_the_newest_and_only_k_are_kept(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(make_state(step), tmp_path, keep=2, best=step == 20)
    assert [s for s, _ in find_checkpoints(tmp_path)] == [30, 40]
    assert load_checkpoint(tmp_path / "last.pt").step == 40
    assert load_checkpoint(tmp_path / "best.pt").step == 20  # survives the pruning of ckpt_step20
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_step40.pt"


def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(make_state(10), tmp_path)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}

    def crashing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as stream:
            stream.write(b"PK\x03\x04 half a zip")  # the process dies while writing
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(make_state(20), tmp_path)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before  # no partial file, no temp left
    assert load_checkpoint(tmp_path / "last.pt").step == 10
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt_step10.pt"


def test_missing_corrupt_and_foreign_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(save_checkpoint(make_state(1), tmp_path).read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt: unreadable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a VESSA training checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "vessa-training-state", "fn": nn.Linear(1, 1)}, pickled)  # needs full pickle
    with pytest.raises(CheckpointError, match=r"unreadable checkpoint \(it holds a torch.nn.modules") as error:
        load_checkpoint(pickled)
    assert "weights_only" not in str(error.value)  # torch's advice to load it unsafely is not passed on


def test_load_model_weights_strict(tmp_path):
    path = save_checkpoint(make_state(3), tmp_path)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    load_model_weights(path, "student", model)
    assert torch.equal(model[0].weight, load_checkpoint(path).models["student"]["0.weight"])
    with pytest.raises(CheckpointError, match="no model 'teacher'"):
        load_model_weights(path, "teacher", model)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model_weights(path, "student", nn.Linear(3, 4))


def test_no_checkpoint_in_an_empty_or_missing_folder(tmp_path):
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "missing") is None
