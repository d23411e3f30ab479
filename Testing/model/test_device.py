"""device: precision choice (autocast), device resolution."""

from __future__ import annotations

import pytest
import torch

from vessa.errors import InputError
from vessa.model import device as device_module
from vessa.model.device import autocast, resolve_device, with_cpu_fallback

CPU = torch.device("cpu")


def autocast_state(precision: str, device: torch.device = CPU) -> tuple[bool, torch.dtype | None]:
    with autocast(device, precision):
        enabled = torch.is_autocast_enabled("cpu")
        return enabled, torch.get_autocast_dtype("cpu") if enabled else None


def test_float32_and_bfloat16_are_what_they_say():
    assert autocast_state("float32") == (False, None)
    assert autocast_state("bfloat16") == (True, torch.bfloat16)
    with autocast(CPU, "bfloat16"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: native)
    assert autocast_state("auto") == ((True, torch.bfloat16) if native else (False, None))


def test_auto_on_another_device_is_float32_and_unknown_precision_is_refused():
    assert autocast_state("auto", torch.device("meta")) == (False, None)
    with pytest.raises(ValueError, match="precision='half'.*auto, float32, bfloat16"):
        autocast(CPU, "half")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_an_input_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=f"device '{name}': this machine has no CUDA GPU"):
        resolve_device(name)
    assert resolve_device("auto") == CPU and resolve_device("cpu") == CPU


@pytest.mark.parametrize(("device", "error", "tried", "warned"), [
    ("cuda", torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"), ["cuda", "cpu"], 1),
    ("auto", RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), ["auto", "cpu"], 1),
])
def test_out_of_memory_runs_again_on_the_cpu_once(device, error, tried, warned):
    calls, warnings = [], []

    def run(where: str) -> str:
        calls.append(where)
        if where != "cpu":
            raise error
        return "done"

    assert with_cpu_fallback(run, device, lambda: warnings.append(1)) == "done"
    assert calls == tried and len(warnings) == warned


@pytest.mark.parametrize(("device", "error"), [
    ("cpu", torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")),  # nowhere else to go
    ("cuda", ValueError("a bug, not memory")),
])
def test_other_failures_are_not_retried(device, error):
    calls = []

    def run(where: str) -> None:
        calls.append(where)
        raise error

    with pytest.raises(type(error)):
        with_cpu_fallback(run, device, lambda: pytest.fail("no fallback expected"))
    assert calls == [device]
