"""Segment one structure of an image from templates and a text prompt (`segment_volume`), and
read templates given as image/segmentation file pairs (`templates_from_pairs`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vessa.errors import InputError
from vessa.io import (
    Segmentation,
    Template,
    Volume,
    read_segmentation,
    read_volume,
)
from vessa.io.segmentation import default_color
from vessa.plausibility import image_modality, image_warnings, modality_warning, result_warnings

log = logging.getLogger(__name__)


@dataclass
class SegmentationOutput:
    """What `segment_volume` produced: the binary segmentation, probabilities, timing, confidence,
    and warnings about a result that cannot mean much (`vessa.plausibility`)."""

    segmentation: Segmentation
    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    slices_decoded: int
    axis: int
    warnings: list[str] = field(default_factory=list)


def templates_from_pairs(pairs: list[str], name: str) -> list[Template]:
    """Templates from "IMAGE,SEGMENTATION" pairs, taking the segment called `name` from each."""
    templates = []
    for pair in pairs:
        parts = pair.split(",")
        if len(parts) != 2:
            raise InputError(f"--templates {pair!r}: expected IMAGE,SEGMENTATION")
        image = read_volume(parts[0])
        segmentation = read_segmentation(parts[1])
        image.require_same_grid(segmentation.geometry(), f"template segmentation {parts[1]}")
        try:
            segment = segmentation.get(name)
        except InputError as error:
            raise InputError(f"template segmentation {parts[1]}: {error}") from None
        if not segment.mask.any():
            raise InputError(f"template segmentation {parts[1]}: segment {segment.name!r} is empty")
        templates.append(Template(image, segment.mask, segment.name, segment.description, Path(parts[0]).stem,
                                  image_modality(image.array)))
    return templates


def segment_volume(image: Volume, templates: list[Template], text: str, checkpoint: str | None = None,
                   device: str = "auto", threshold: float = 0.5, name: str | None = None,
                   allow_untrained: bool = False, precision: str = "auto", slice_step: int = 1,
                   image_name: str = "the image", modality: str = "") -> SegmentationOutput:
    """Run VESSA on `image`; the structure becomes segment `name` (default: `text`).

    precision, slice_step: see `VolumeSegmenter` (bf16 where the hardware has it; a sparse pass).
    image_name, modality: how warnings name the image, and its modality ("CT", "MR", ...; default:
    CT when its values look like Hounsfield units); templates of another modality are warned about.
    """
    from vessa.model import load_segmenter

    if not text or not text.strip():
        raise InputError("the text prompt is empty: give the structure's name or a description")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1")
    if slice_step < 1:
        raise InputError(f"slice step {slice_step} must be >= 1 (1: every slice)")
    # one call per segmenter: no feature cache (it would only hold the target's features in memory)
    modality = image_modality(image.array, modality)
    warnings = [warning for template in templates if (warning := modality_warning(template, image_name, modality))]
    warnings += image_warnings(image, templates, slice_step)
    segmenter = load_segmenter(checkpoint, device=device, allow_untrained=allow_untrained, cache_mib=0,
                               precision=precision, slice_step=slice_step)
    result = segmenter.segment(image, templates, text.strip(), modality=modality)
    segmentation = Segmentation.on_grid(image)
    mask = result.probability.array >= threshold
    segmentation.add(name or text.strip(), mask, default_color(0))
    warnings += result.warnings + result_warnings(mask, name or text.strip(), threshold)
    return SegmentationOutput(segmentation, result.probability, result.slice_confidence, result.seconds,
                              result.slices_decoded, result.axis, warnings)
