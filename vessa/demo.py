"""`vessa demo`: segment a real sample case from a template of another patient, and score it.

Default: the lesion of pyradiomics' lung2 CT, from the lung1 CT and its lesion mask as the
only template, with the best checkpoint we ship (`vessa weights list`). Writes the
segmentation, the probability map and an overlay PNG, and prints Dice/HD95 against the
reference mask and the time taken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_TARGET = "lung2"
DEFAULT_TEMPLATES = ("lung1",)


def overlay_slice(reference: np.ndarray, predicted: np.ndarray) -> int:
    """The slice (k) to show: the most overlap of prediction and reference; without overlap, the
    most of both among slices that hold both; failing that, the most of either."""
    def per_slice(mask: np.ndarray) -> np.ndarray:
        return mask.reshape(mask.shape[0], -1).sum(1)

    overlap, ref, pred = per_slice(reference & predicted), per_slice(reference), per_slice(predicted)
    if overlap.any():
        return int(np.argmax(overlap))
    both = (ref > 0) & (pred > 0)
    return int(np.argmax(np.where(both, ref + pred, -1) if both.any() else ref + pred))


def overlay_png(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    """Save the slice `overlay_slice` picks, with reference (green) and prediction (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = overlay_slice(reference, predicted)
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


def run_demo(target: str = DEFAULT_TARGET, templates: tuple[str, ...] = DEFAULT_TEMPLATES,
             structure: str = "lesion", output: Path = Path("vessa-demo"), checkpoint: str | None = None,
             device: str = "auto") -> dict[str, float]:
    """Run the demo; returns the scores and timings it printed. Bad cases, a device that is not
    there and an output folder that cannot be written are refused before any work."""
    from vessa.io import Template, atomic_paths, check_output, read_segmentation, read_volume, write_volume
    from vessa.io.segmentation import write_segmentation

    check_cases(target, templates)
    paths = [check_output(output / name, "--output") for name in (
        f"{target}_{structure}.seg.nrrd", f"{target}_{structure}_probability.nrrd", f"{target}_{structure}.png")]
    from vessa.evaluate import score_masks
    from vessa.model.device import resolve_device  # imports torch: after the checks that need none
    from vessa.samples import fetch, load_manifest
    from vessa.segment import segment_volume

    resolve_device(device)
    started = time.perf_counter()
    fetch("pyradiomics")
    cases = {case.case_id: case for case in load_manifest("pyradiomics")}
    image = read_volume(cases[target].image)
    reference = read_segmentation(cases[target].segmentation).get(structure).mask
    exemplars = []
    for name in templates:
        segment = read_segmentation(cases[name].segmentation).get(structure)
        exemplars.append(Template(read_volume(cases[name].image), segment.mask, segment.name, case_id=name,
                                  modality=cases[name].modality))
    print(f"target {target} {image.shape} ({cases[target].modality}); templates: {', '.join(templates)}; "
          f"text: {structure!r}")
    result = segment_volume(image, exemplars, structure, checkpoint=checkpoint, device=device, image_name=target,
                            modality=cases[target].modality)
    predicted = result.segmentation.segments[0].mask
    dice, hd95 = score_masks(predicted, reference, image.spacing[::-1])
    with atomic_paths(paths) as (seg_tmp, probability_tmp, png_tmp):
        write_segmentation(result.segmentation, seg_tmp)
        write_volume(result.probability, probability_tmp)
        overlay_png(image.array, reference, predicted, png_tmp, f"{target} {structure}: Dice {dice:.3f}")
    total = time.perf_counter() - started
    for warning in result.warnings:
        print(f"vessa demo: warning: {warning}", file=sys.stderr)
    print("wrote " + ", ".join(f"{path} ({path.stat().st_size / 2**20:.1f} MB)" for path in paths))
    print(f"Dice {dice:.3f}  HD95 {hd95:.1f} mm  predicted {int(predicted.sum())} / reference "
          f"{int(reference.sum())} voxels")
    print(f"segmentation {result.seconds:.1f} s, whole demo {total:.1f} s")
    return {"dice": dice, "hd95_mm": hd95, "segment_s": result.seconds, "total_s": total}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa demo`."""
    parser = subparsers.add_parser("demo", help="segment a real sample case from another patient's template",
                                   description=__doc__)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="pyradiomics case to segment (default: %(default)s)")
    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES),
                        help="pyradiomics template cases (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("vessa-demo"),
                        help="folder for the segmentation, probability map and overlay PNG (default: %(default)s)")
    parser.add_argument("--checkpoint", help="checkpoint file or registry name (default: best shipped)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the GPU when PyTorch sees one, else the CPU (default: %(default)s)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_demo(args.target, tuple(args.templates), output=args.output, checkpoint=args.checkpoint, device=args.device)
    return 0
