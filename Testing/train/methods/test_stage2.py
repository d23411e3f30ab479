"""Stage-2 objectives (UniMatch V2, + VESSA, DuSSS) on the tiny cohort: steps, losses, EMA, CLI runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vessa import cli
from vessa.errors import JobError
from vessa.train.distributed import Runtime
from vessa.train.methods import build_setup
from vessa.train.methods.stage2_base import parse_options
from vessa.train.methods.unimatch import UniMatchOptions
from vessa.train.methods.vessa_in_the_loop import VessaOptions
from vessa.train.training_checkpoint import load_checkpoint

CPU = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TINY = [4, 8, 16]
UNTRAINED_VESSA = {"vessa_untrained": True, "vessa_image_size": 128, "vessa_bank_size": 2, "vessa_batch_size": 4}


@pytest.fixture
def stage2_spec(make_spec):
    def make(method: str, **options):
        extra = UNTRAINED_VESSA if method == "vessa" else {}
        options = {"channels": TINY, "res_units": 1, **extra, **options}
        return make_spec(method=method, structures=["blob", "ring"], options=options)
    return make


@pytest.fixture
def shared_assistant(assistant, monkeypatch):
    """Objectives built in this test get the module's assistant instead of building their own."""
    monkeypatch.setattr("vessa.train.methods.vessa_in_the_loop.load_vessa_assistant",
                        lambda options, path=None: assistant)
    return assistant


class Recorder(nn.Module):
    """Passes calls to a model and remembers the keyword arguments of each call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[dict] = []

    def forward(self, x, **kwargs):
        self.calls.append({"batch": x.shape[0], **kwargs})
        return self.model(x, **kwargs)


def one_step(setup, step=0, nets=None):
    objective = setup.objective
    batch = next(setup.batches(step))
    loss, metrics = objective.training_step(batch, step, nets or objective.models())
    loss.backward()
    return loss, metrics


def test_options_are_checked_against_the_method(stage2_spec):
    assert parse_options(UniMatchOptions, stage2_spec("unimatch", threshold=1)).threshold == 1.0
    with pytest.raises(JobError, match="unknown option.*features"):
        parse_options(UniMatchOptions, stage2_spec("unimatch", features=[4]))
    with pytest.raises(JobError, match="'channels'.*like \\[16, 32, 64, 128\\]"):
        parse_options(UniMatchOptions, stage2_spec("unimatch", channels=[4.5, 8]))
    with pytest.raises(JobError, match="image_size 32: must be a multiple of 64"):
        build_setup(stage2_spec("unimatch", channels=[4, 4, 4, 4, 4, 4, 4]), CPU)
    with pytest.raises(JobError, match="'complementary_dropout'.*like True"):
        parse_options(UniMatchOptions, stage2_spec("unimatch", complementary_dropout="yes"))
    with pytest.raises(JobError, match="threshold"):
        parse_options(UniMatchOptions, stage2_spec("unimatch", threshold=1.5))
    with pytest.raises(JobError, match="vessa_checkpoint"):
        parse_options(VessaOptions, stage2_spec("vessa", vessa_untrained=False))
    assert not parse_options(VessaOptions, stage2_spec("vessa", vessa_untrained=False, vessa=False)).vessa


def test_unimatch_step_gives_finite_loss_gradients_and_complementary_masks(stage2_spec):
    torch.manual_seed(0)
    setup = build_setup(stage2_spec("unimatch", threshold=0.0), CPU)
    objective = setup.objective
    recorder = Recorder(objective.student)
    loss, metrics = one_step(setup, nets={"student": recorder})
    assert torch.isfinite(loss) and metrics["confident"] == 1.0 and metrics["loss_u"] > 0
    assert loss.item() == pytest.approx((metrics["loss_x"] + metrics["loss_u"]) / 2, rel=1e-5)
    grads = [p.grad for p in objective.student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    labelled, strong = recorder.calls
    assert labelled["batch"] == 2 and "channel_mask" not in labelled
    mask = strong["channel_mask"]
    assert strong["batch"] == 4 and mask.shape == (4, 16)  # two strong views of 2 images, widest level 16
    assert torch.equal(mask[:2] + mask[2:], torch.full((2, 16), 2.0))
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_unimatch_without_confident_pixels_is_half_the_supervised_loss(stage2_spec):
    setup = build_setup(stage2_spec("unimatch", threshold=1.0, complementary_dropout=False), CPU)
    loss, metrics = one_step(setup)
    assert metrics["loss_u"] == 0.0 and loss.item() == pytest.approx(metrics["loss_x"] / 2, rel=1e-6)


def test_ema_teacher_follows_the_student_and_is_checkpointed(stage2_spec):
    setup = build_setup(stage2_spec("unimatch"), CPU)
    objective = setup.objective
    with torch.no_grad():
        for p in objective.student.parameters():
            p.add_(1.0)
    objective.after_step(0)  # momentum 0 at step 0: teacher = student
    for t, s in zip(objective.teacher.state_dict().values(), objective.student.state_dict().values(), strict=True):
        assert torch.equal(t, s)
    state = objective.state_dict()
    assert state["student_config"]["class_names"] == ["background", "blob", "ring"]
    objective.load_state_dict(state)
    with pytest.raises(JobError, match="student config"):
        objective.load_state_dict({**state, "student_config": {**state["student_config"], "norm": "batch"}})


class FixedRefiner:
    """A stand-in for VessaRefiner: VESSA says "blob" everywhere, but has no map for slice 0."""

    def probabilities(self, images, keys, teacher, step):
        maps = torch.zeros(images.shape[0], 2, *images.shape[-2:])
        maps[1:, 0] = 1.0
        return maps, torch.arange(images.shape[0]) > 0


def test_vessa_fusion_follows_the_weight_schedule(stage2_spec):
    setup = build_setup(stage2_spec("vessa", vessa=False, weak=False), CPU)
    objective = setup.objective
    objective.refiner = FixedRefiner()
    unlabelled = next(setup.batches(0))["unlabelled"]
    teacher = torch.softmax(objective.teacher(unlabelled["image"]), dim=1)
    _, probs, metrics = objective.pseudo_labels(unlabelled, 0)
    assert metrics == {"vessa_weight": 1.0, "vessa_coverage": 0.5}
    assert torch.allclose(probs[0], teacher[0])  # no VESSA map: the teacher alone
    assert (probs[1].argmax(0) == 1).all() and torch.allclose(probs[1, 1], torch.ones(1))
    _, probs, metrics = objective.pseudo_labels(unlabelled, objective.spec.steps)
    assert metrics["vessa_weight"] == pytest.approx(0.3)
    expected = 0.7 * teacher[1]
    expected[1] += 0.3
    assert torch.allclose(probs[1], expected, atol=1e-5)


def test_dusss_step_trains_student_and_heads(stage2_spec):
    torch.manual_seed(0)
    setup = build_setup(stage2_spec("dusss", threshold=0.0, embed_dim=8), CPU)
    objective = setup.objective
    loss, metrics = one_step(setup)
    assert torch.isfinite(loss)
    for name in ("sup", "semi", "cmc", "imc", "tg", "pix"):
        assert metrics[f"loss_{name}"] > 0, name
    for model in (objective.student, objective.heads):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert objective.heads.log_tau.grad != 0
    with torch.no_grad():
        objective.heads.log_tau.add_(1.0)
    objective.after_step(0)  # momentum 0 at step 0: teacher = student
    assert all(torch.equal(t, s) for t, s in zip(objective.teacher_heads.parameters(), objective.heads.parameters(),
                                                   strict=True))
    assert set(objective.state_dict()) == {"teacher", "teacher_heads", "student_config"}


def test_dusss_without_sss_has_no_gaussian_heads(stage2_spec):
    setup = build_setup(stage2_spec("dusss", sss=False, embed_dim=8, text_pseudo=False), CPU)
    assert setup.objective.heads.image_gauss is None
    loss, _ = one_step(setup)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", ["unimatch", "vessa", "dusss"])
def test_vessa_train_cli_runs_each_method(method, stage2_spec, tmp_path, capsys, shared_assistant):
    spec = stage2_spec(method).replace(steps=3, checkpoint_every=3, log_every=1)
    if method == "vessa":  # one structure: half the assistant calls
        spec = spec.replace(structures=["blob"])
    path = spec.to_json(tmp_path / "job.json")
    assert cli.main(["train", "--spec", str(path)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3]
    assert all(e["loss"] == e["loss"] for e in progress)  # not NaN
    if method == "vessa":
        assert progress[0]["vessa_weight"] == 1.0 and progress[-1]["vessa_weight"] < 1.0
        assert all(e["vessa_coverage"] == 1.0 for e in progress)
    finished = events[-1]
    assert finished["event"] == "finished" and "val_dice" in finished
    state = load_checkpoint(finished["checkpoint"])
    assert state.step == 3 and set(state.objective) >= {"teacher", "student_config"}
    assert SimpleNamespace(**state.config).method == method
