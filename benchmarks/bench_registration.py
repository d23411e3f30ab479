"""Registration alone on development targets: what the registration's settings are chosen on.

Targets: 4 AAL and 4 JHU regions of Colin27 (drawn at random, seed 0, among each atlas's 40
largest; never the Harvard-Oxford or Brodmann regions that `bench_quality.py` holds out) in
Colin27 under random elastic + affine deformations (`bench_quality.deformed`, seeds 4 and 5,
or `--seeds`; each seed also draws its own grey-level curve):
"mild" (strength 1), "strong" (strength 2), "contrast" (strength 2 and a new grey-level
curve, bias field and noise) and "noisy" (strength 2 and Gaussian noise of 3 % of the grey-level
range, the grey levels unchanged). Templates: Colin27 and its deformation of seed 2. Each
`--configs` item is a set of `RegistrationConfig` fields; every configuration registers every
pair in the same run, and the table gives the mean Dice of the warped masks (>= 0.5) per set
and the mean seconds per registration. The set "ct" (not run unless named) is another kind of
volume: synthetic 200 x 512 x 512 CTs (`bench_pipeline_speed.synthetic_ct`, 0.7 x 0.7 x 2.5 mm,
registered at 4 mm, the grid's voxel cap), one per seed, each with a template CT whose organ is
moved by up to 15 voxels, scaled by 0.8-1.2 and the body by 0.9-1.1 (drawn from the seed).
`--scale` multiplies every volume's spacing and origin (0.1: the same anatomy at a small
animal's size, the same voxels).

    python benchmarks/bench_registration.py --configs "deformable_resolution_mm=3,demons_sigma=1.5" \\
        "deformable_resolution_mm=2,demons_sigma=1"
    python benchmarks/bench_registration.py --sets contrast --seeds 4 5 6 7 8 9 \\
        --configs "mind_patch_sigma=0.8,mind_sigma=1" ""
    python benchmarks/bench_registration.py --sets ct --seeds 0 1 2 3 4 5
    python benchmarks/bench_registration.py --sets strong contrast --scale 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator

import numpy as np
from bench_pipeline_speed import SPACING, synthetic_ct
from bench_quality import colin27_atlas, deformed, scaled

from vessa.io import Volume
from vessa.priors.registration import RegistrationConfig, register, warp_mask
from vessa.samples import fetch

SETS = {  # name: (deformation strength, new contrast, noise as a fraction of the grey-level range)
    "mild": (1.0, False, 0.0), "strong": (2.0, False, 0.0), "contrast": (2.0, True, 0.0), "noisy": (2.0, False, 0.03)}
Pair = tuple[Volume, dict[str, np.ndarray], Volume, dict[str, np.ndarray]]  # template, its masks, target, its masks


def parse_config(text: str) -> RegistrationConfig:
    """A `RegistrationConfig` from "field=value,field=value" (empty: the defaults)."""
    parsers = {"bool": lambda value: value.lower() == "true", "int": int, "float": float}
    types = {field.name: field.type for field in dataclasses.fields(RegistrationConfig)}
    values = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=")
        values[name] = parsers[types[name]](value)
    return RegistrationConfig(**values)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def colin27_pairs(name: str, seeds: list[int]) -> Iterator[Pair]:
    """The set `name` of `SETS` (module docstring): every template with every seed's target."""
    strength, contrast, noise = SETS[name]
    for atlas in ("aal", "jhu"):
        image, segmentation = colin27_atlas(atlas)
        segments = sorted(segmentation.segments, key=lambda s: -int(s.mask.sum()))
        picks = sorted(np.random.default_rng(0).choice(min(40, len(segments)), 4, replace=False))
        masks = {segments[i].name: segments[i].mask for i in picks}
        templates = [(image, masks), deformed(image, masks, seed=2)]
        for seed in seeds:
            target, target_masks = deformed(image, masks, seed=seed, strength=strength, contrast=contrast)
            if noise:
                low, high = np.percentile(target.array, [1, 99.5])
                target = target.with_array((target.array + np.random.default_rng(seed).normal(
                    0.0, noise * (high - low), target.shape)).astype(np.float32))
            for template, template_masks in templates:
                yield template, template_masks, target, target_masks


def ct_pairs(seeds: list[int]) -> Iterator[Pair]:
    """The set "ct" (module docstring): a template CT and a target CT per seed."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        shift, organ_scale, body_scale = tuple(rng.uniform(-15, 15, 3)), rng.uniform(0.8, 1.2), rng.uniform(0.9, 1.1)
        target, target_organ = synthetic_ct(10 + seed)
        template, template_organ = synthetic_ct(20 + seed, shift, organ_scale, body_scale)
        yield (Volume(template, spacing=SPACING), {"organ": template_organ}, Volume(target, spacing=SPACING),
               {"organ": target_organ})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=[""])
    parser.add_argument("--sets", nargs="+", choices=[*SETS, "ct"], default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[4, 5], help="the targets' deformations (and curves)")
    parser.add_argument("--scale", type=float, default=1.0, help="every volume's spacing and origin times this")
    args = parser.parse_args()
    configs = [parse_config(text) for text in args.configs]
    fetch("colin27")
    scores = np.zeros((len(args.sets), len(configs)))
    seconds = np.zeros(len(configs))
    count = np.zeros(len(args.sets))
    registrations = 0
    for row, name in enumerate(args.sets):
        for template, template_masks, target, target_masks in (
                ct_pairs(args.seeds) if name == "ct" else colin27_pairs(name, args.seeds)):
            template, target = scaled(template, args.scale), scaled(target, args.scale)
            for column, config in enumerate(configs):
                start = time.perf_counter()
                transform = register(template, target, config, flatten=name != "ct").transform
                seconds[column] += time.perf_counter() - start
                scores[row, column] += sum(
                    dice(warp_mask(template_masks[n], template, target, transform) >= 0.5, target_masks[n])
                    for n in template_masks)
            count[row] += len(template_masks)
            registrations += 1
    print("| configuration | " + " | ".join(args.sets) + " | s per registration |")
    print("|---|" + "---|" * (len(args.sets) + 1))
    for column, text in enumerate(args.configs):
        means = " | ".join(f"{scores[row, column] / count[row]:.3f}" for row in range(len(args.sets)))
        print(f"| {text or 'defaults'} | {means} | {seconds[column] / registrations:.1f} |")


if __name__ == "__main__":
    main()
