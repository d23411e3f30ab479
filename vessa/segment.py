"""`vessa segment`: segment one structure of an image from templates and a text prompt."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vessa.errors import InputError
from vessa.io import Segmentation, Template, TemplateBank, Volume, read_segmentation, read_volume
from vessa.io.segmentation import default_color, write_segmentation
from vessa.model.config import PRECISIONS

log = logging.getLogger(__name__)


@dataclass
class SegmentationOutput:
    """What `segment_files` produced: the binary segmentation, probabilities, timing, confidence."""

    segmentation: Segmentation
    probability: Volume
    slice_confidence: np.ndarray
    seconds: float
    slices_decoded: int


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
        segment = segmentation.get(name)
        templates.append(Template(image, segment.mask, segment.name, segment.description, Path(parts[0]).stem))
    return templates


def segment_volume(image: Volume, templates: list[Template], text: str, checkpoint: str | None = None,
                   device: str = "auto", threshold: float = 0.5, name: str | None = None,
                   allow_untrained: bool = False, precision: str = "auto", slice_step: int = 1) -> SegmentationOutput:
    """Run VESSA on `image`; the structure becomes segment `name` (default: `text`).

    precision, slice_step: see `VolumeSegmenter` (bf16 where the hardware has it; a sparse pass).
    """
    from vessa.model import load_segmenter

    if not text or not text.strip():
        raise InputError("the text prompt is empty: give the structure's name or a description")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold {threshold} must be between 0 and 1")
    if slice_step < 1:
        raise InputError(f"slice step {slice_step} must be >= 1 (1: every slice)")
    # one call per segmenter: no feature cache (it would only hold the target's features in memory)
    segmenter = load_segmenter(checkpoint, device=device, allow_untrained=allow_untrained, cache_mib=0,
                               precision=precision, slice_step=slice_step)
    result = segmenter.segment(image, templates, text.strip())
    segmentation = Segmentation.on_grid(image)
    segmentation.add(name or text.strip(), result.probability.array >= threshold, default_color(0))
    return SegmentationOutput(segmentation, result.probability, result.slice_confidence, result.seconds,
                              result.slices_decoded)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa segment`."""
    parser = subparsers.add_parser("segment", help="segment a structure from templates + text",
                                   description=__doc__)
    parser.add_argument("--image", required=True, help="image to segment (.nrrd, .nii.gz, .mha, ...)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bank", help="template bank folder (vessa bank create/add)")
    source.add_argument("--templates", nargs="+", metavar="IMAGE,SEG", help="template image/segmentation pairs")
    parser.add_argument("--text", required=True, help="structure name (looked up in the templates)")
    parser.add_argument("--description", default="", help="text prompt (default: the structure name)")
    parser.add_argument("--out", required=True, help="output .seg.nrrd")
    parser.add_argument("--probability-out", help="also write the probability volume (.nrrd)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--checkpoint", help="checkpoint file or registry name (default: best shipped)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16 on CUDA and on CPUs with bf16 instructions (about 2x faster), else float32")
    parser.add_argument("--slice-step", type=int, default=1, metavar="K",
                        help="decode every K-th slice first, then the slices between them only next to the "
                             "structure (faster; a structure thinner than K slices can be missed; default 1: all)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="run a randomly initialised model when no checkpoint exists (testing only)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from vessa.io import write_volume

    image = read_volume(args.image)
    if args.bank:
        templates = TemplateBank.open(args.bank).templates(args.text)
    else:
        templates = templates_from_pairs(args.templates, args.text)
    if not str(args.out).lower().endswith(".seg.nrrd"):
        raise InputError(f"--out {args.out}: the segmentation is written as .seg.nrrd")
    output = segment_volume(image, templates, args.description or args.text, args.checkpoint, args.device,
                            args.threshold, name=args.text, allow_untrained=args.allow_untrained,
                            precision=args.precision, slice_step=args.slice_step)
    write_segmentation(output.segmentation, args.out)
    if args.probability_out:
        write_volume(output.probability, args.probability_out)
    voxels = int(output.segmentation.segments[0].mask.sum())
    count = len(output.slice_confidence)
    decoded = f", {output.slices_decoded} of {count} slices decoded" if args.slice_step > 1 else ""
    print(f"{args.out}: {args.text!r}, {voxels} voxels, {len(templates)} templates, "
          f"mean slice confidence {float(np.mean(output.slice_confidence)):.2f}, {output.seconds:.1f} s{decoded}")
    return 0
