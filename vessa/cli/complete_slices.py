"""`vessa segment --slices`: complete a structure drawn on a few slices of a segmentation.

The drawn segment is completed by `vessa.priors` (shape prior carried along the anatomy, the
case's own appearance, SAM where it reproduces the drawn slices); the drawn slices are kept
exactly, and the other segments of the input are written back unchanged.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from vessa.errors import CheckpointError, InputError
from vessa.io import Segment, Segmentation, Volume, atomic_paths, read_segmentation, read_volume, write_segmentation
from vessa.orientation import AXIS_NAMES, describe_slices
from vessa.plausibility import image_modality, result_warnings
from vessa.priors import DEFAULT_SAM_WEIGHTS
from vessa.priors.drawn_slices import find_drawn_slices


@dataclass
class CompletedSegmentation:
    """The input segmentation with the drawn segment completed, the completion's probability on
    the image grid, and the completer's result (drawn slices, next slice, warnings, time)."""

    segmentation: Segmentation
    probability: Volume
    result: object


def drawn_segment(segmentation: Segmentation, name: str | None, path: str) -> Segment:
    """The segment to complete: `name`, or the only one; InputError naming the file otherwise."""
    try:
        if name is not None:
            return segmentation.get(name)
    except InputError as error:
        raise InputError(f"--slices {path}: {error}") from None
    if len(segmentation.segments) != 1:
        names = ", ".join(repr(n) for n in segmentation.names()) or "none"
        raise InputError(f"--slices {path} has {len(segmentation.segments)} segments ({names}): name the drawn one "
                         "with --segment")
    return segmentation.segments[0]


def complete_segmentation(image: Volume, segmentation: Segmentation, segment: Segment, completer,
                          threshold: float = 0.5, modality: str = "") -> CompletedSegmentation:
    """`segment` of `segmentation` (on `image`'s grid) completed by `completer` (a
    `vessa.priors.SliceCompleter`); the other segments as they are."""
    result = completer.complete(image, segment.mask, modality=modality)
    mask = result.probability >= threshold
    segments = [Segment(s.name, mask, s.color, s.description) if s is segment else s for s in segmentation.segments]
    return CompletedSegmentation(Segmentation.on_grid(image, segments), image.with_array(result.probability), result)


def run_slices(args: argparse.Namespace, outputs: list[Path]) -> int:
    """`vessa segment --slices` with its outputs already checked; InputError before any model work."""
    from vessa.io import write_volume
    from vessa.model.device import resolve_device  # imports torch: after the checks that need none
    from vessa.priors import load_completer, sam_weights_option

    if not 0.0 < args.threshold < 1.0:
        raise InputError(f"--threshold {args.threshold} must be between 0 and 1")
    resolve_device(args.device)
    image = read_volume(args.image)
    segmentation = read_segmentation(args.slices)
    image.require_same_grid(segmentation.geometry(), f"--slices {args.slices}")
    segment = drawn_segment(segmentation, args.segment, args.slices)
    try:
        find_drawn_slices(segment.mask)  # an empty segment or a 3D shape is refused before loading SAM
    except InputError as error:
        raise InputError(f"--slices {args.slices}: segment {segment.name!r}: {error}") from None
    try:
        completer = load_completer(sam_weights_option(args.sam_weights), device=args.device)
    except CheckpointError as error:
        raise CheckpointError(f"--sam-weights {args.sam_weights or DEFAULT_SAM_WEIGHTS}: {error}") from None
    output = complete_segmentation(image, segmentation, segment, completer, args.threshold,
                                   image_modality(image.array))
    with atomic_paths(outputs) as temporaries:
        write_segmentation(output.segmentation, temporaries[0])
        if args.probability_out:
            write_volume(output.probability, temporaries[1])
    result = output.result
    for warning in [*result.warnings, *result_warnings(result.probability >= args.threshold, segment.name,
                                                       args.threshold)]:
        print(f"vessa segment: warning: {warning}", file=sys.stderr)
    voxels = int(output.segmentation.get(segment.name).mask.sum())
    drawn = describe_slices(image.ijk_to_ras(), result.drawn.axis, result.drawn.indices)
    sam = f"SAM weight {result.sam_weight:.2f} (fidelity {result.fidelity:.2f})" if completer.sam else "without SAM"
    check = "no undrawn slice is uncertain"
    if result.next_slice is not None:
        check = f"check slice {AXIS_NAMES[result.drawn.axis]} = {result.next_slice} first (the most uncertain)"
    print(f"{args.out}: {segment.name!r} completed from {drawn}, {voxels} voxels, {sam}, {result.seconds:.1f} s; "
          f"{check}")
    return 0
