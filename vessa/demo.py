"""`vessa demo`: segment a real sample case from a template of another patient, and score it.

Default: the lesion of pyradiomics' lung2 CT, from the lung1 CT and its lesion mask as the
only template, with the best checkpoint we ship (`vessa weights list`). Writes the
segmentation, the probability map and an overlay PNG, and prints Dice/HD95 against the
reference mask and the time taken.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

DEFAULT_TARGET = "lung2"
DEFAULT_TEMPLATES = ("lung1",)


def overlay_png(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    """Save the slice (k) where the reference is largest, with reference (green) and prediction (red) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vessa.io.atomic import atomic_path

    k = int(np.argmax(reference.reshape(reference.shape[0], -1).sum(1)))
    figure, axis = plt.subplots(figsize=(6, 6))
    low, high = np.percentile(image[k], (1, 99))
    axis.imshow(image[k], cmap="gray", vmin=low, vmax=high)
    if reference[k].any():
        axis.contour(reference[k], levels=[0.5], colors="lime", linewidths=1.2)
    if predicted[k].any():
        axis.contour(predicted[k], levels=[0.5], colors="red", linewidths=1.2)
    axis.set_title(f"{title} (slice {k}; green: reference, red: VESSA)", fontsize=9)
    axis.axis("off")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(figure)
    return path


def run_demo(target: str = DEFAULT_TARGET, templates: tuple[str, ...] = DEFAULT_TEMPLATES,
             structure: str = "lesion", output: Path = Path("vessa-demo"), checkpoint: str | None = None,
             device: str = "auto") -> dict[str, float]:
    """Run the demo; returns the scores and timings it printed."""
    from vessa.evaluate import score_masks
    from vessa.io import Template, read_segmentation, read_volume, write_volume
    from vessa.io.segmentation import write_segmentation
    from vessa.samples import fetch, load_manifest
    from vessa.segment import segment_volume

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
    result = segment_volume(image, exemplars, structure, checkpoint=checkpoint, device=device)
    predicted = result.segmentation.segments[0].mask
    output.mkdir(parents=True, exist_ok=True)
    seg_path = write_segmentation(result.segmentation, output / f"{target}_{structure}.seg.nrrd")
    write_volume(result.probability, output / f"{target}_{structure}_probability.nrrd")
    dice, hd95 = score_masks(predicted, reference, image.spacing[::-1])
    png = overlay_png(image.array, reference, predicted, output / f"{target}_{structure}.png",
                      f"{target} {structure}: Dice {dice:.3f}")
    total = time.perf_counter() - started
    print(f"wrote {seg_path}, {png}")
    print(f"Dice {dice:.3f}  HD95 {hd95:.1f} mm  predicted {int(predicted.sum())} / reference "
          f"{int(reference.sum())} voxels")
    print(f"segmentation {result.seconds:.1f} s, whole demo {total:.1f} s")
    return {"dice": dice, "hd95_mm": hd95, "segment_s": result.seconds, "total_s": total}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `vessa demo`."""
    parser = subparsers.add_parser("demo", help="segment a real sample case from another patient's template",
                                   description=__doc__)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="pyradiomics case to segment")
    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), help="pyradiomics template cases")
    parser.add_argument("--output", type=Path, default=Path("vessa-demo"))
    parser.add_argument("--checkpoint", help="checkpoint file or registry name (default: best shipped)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_demo(args.target, tuple(args.templates), output=args.output, checkpoint=args.checkpoint, device=args.device)
    return 0
