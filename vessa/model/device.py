"""Device choice, mixed precision and out-of-memory detection for inference."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import torch

from vessa.errors import InputError
from vessa.model.config import PRECISIONS

T = TypeVar("T")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> the first CUDA GPU when there is one, else CPU; anything else as given.

    InputError for "cuda" (or "cuda:N") where torch sees no CUDA GPU.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: this machine has no CUDA GPU that PyTorch can use; use 'cpu' or 'auto'")
    return resolved


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """Mixed precision for inference on `device` (`PRECISIONS`).

    "float32": none. "bfloat16": bf16 autocast. "auto": bf16 on CUDA (fp16 where bf16 is
    unsupported) and on CPUs with bf16 instructions (AVX512-BF16 or AMX), where it runs the
    encoder faster (benchmarks/RESULTS.md); float32 on other CPUs, where bf16 is emulated.
    """
    check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        precision = "bfloat16" if device.type == "cpu" and cpu_has_bf16() else "float32"
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def check_precision(precision: str) -> None:
    """ValueError naming `precision` unless it is one of `PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")


def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (the caller may retry smaller or on CPU)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)
    )


def with_cpu_fallback(run: Callable[[str], T], device: str, warn: Callable[[], None]) -> T:
    """`run(device)`; when that runs out of GPU memory, `warn()` and `run("cpu")` instead.

    The one out-of-memory fallback (a segmenter's call, the effect's job): it holds for this run
    only, so the next one starts on `device` again. `device`: "cpu", "cuda", "auto", ..."""
    try:
        return run(device)
    except Exception as error:
        if device == "cpu" or not is_out_of_memory(error):
            raise
    warn()
    return run("cpu")
