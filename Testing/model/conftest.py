"""Fixtures of the model tests: one small randomly initialised assistant shared by the tests."""

from __future__ import annotations

import pytest
import torch

from vessa.model.assistant import TemplateAssistant
from vessa.model.config import ModelConfig


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core test machine this is ~3x faster than two
    threads competing with other processes; the previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
