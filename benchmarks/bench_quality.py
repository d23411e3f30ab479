"""Stage-1 quality: Dice of VESSA on held-out real cases and unseen structures.

Two groups, each against a no-model baseline measured in the same run:
* unseen patients — the lesion of pyradiomics lung2 (CT) and brain2 (MR), each segmented
  from the lesion of lung1 / brain1 (real, different patients) as the only template;
* unseen structures — Harvard-Oxford cortical regions (never trained on) in Colin27 T1. Only
  one Colin27 subject exists, so the target is Colin27 under a fixed random 3D elastic +
  affine deformation (a synthetic "new subject") and the templates are Colin27 itself and
  differently deformed copies (K = 1 and 3). This measures matching across deformation, not
  across real anatomy — read it as an upper bound.
Baseline "position transfer": each template's mask slice at the same relative slice position,
resized onto the target slice, and with K templates their majority vote (mean >= 0.5): what
the templates give without any model. The model's location prior (`location_prior` > 0)
starts from the same information (in the model's square frame, averaged not voted), so a
model that only reproduces its prior scores about the baseline; compare the two columns.
Column "untrained": the same model layout with random weights (seed 0) in the same run, so
the table shows what training added over the architecture and its prior alone.

    python benchmarks/bench_quality.py --checkpoint runs/starter/job/vessa_stage1.pt --regions 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Rand3DElasticd

from vessa.evaluate import score_masks
from vessa.io import Template, Volume, read_segmentation, read_volume
from vessa.model import load_segmenter
from vessa.model.assistant import TemplateAssistant
from vessa.model.config import FINE_LEVELS, PRECISIONS
from vessa.model.volume import TEMPLATE_SLICE_LIMIT, VolumeSegmenter
from vessa.samples import fetch, load_manifest


def position_transfer(template: Template, shape: tuple[int, int, int]) -> np.ndarray:
    """The template mask slice at each target slice's relative position, resized to the target slice."""
    mask = torch.from_numpy(template.mask.astype(np.float32))
    picks = np.round(np.linspace(0, mask.shape[0] - 1, shape[0])).astype(int)
    slices = F.interpolate(mask[picks][:, None], size=shape[1:], mode="nearest")[:, 0]
    return slices.numpy() > 0.5


def deformed(image: Volume, masks: dict[str, np.ndarray], seed: int) -> tuple[Volume, dict[str, np.ndarray]]:
    """A synthetic subject: the same random elastic + affine warp of the image and its masks."""
    names = list(masks)
    labels = np.zeros(image.shape, np.float32)
    for index, name in enumerate(names, start=1):
        labels[masks[name]] = index
    warp = Rand3DElasticd(keys=["image", "labels"], sigma_range=(9, 11), magnitude_range=(80, 160), prob=1.0,
                          rotate_range=(0.12, 0.12, 0.12), scale_range=(0.08, 0.08, 0.08),
                          mode=("bilinear", "nearest"), padding_mode="zeros")
    warp.set_random_state(seed)
    out = warp({"image": image.array[None].astype(np.float32), "labels": labels[None]})
    warped_labels = np.asarray(out["labels"])[0].round()
    return (image.with_array(np.asarray(out["image"])[0].astype(np.float32)),
            {name: warped_labels == index for index, name in enumerate(names, start=1)})


def run_case(segmenters, group: str, name: str, target: Volume, truth: np.ndarray, templates: list[Template],
             text: str, modality: str) -> dict:
    trained, untrained = segmenters
    started = time.perf_counter()
    result = trained.segment(target, templates, text, modality=modality)
    seconds = time.perf_counter() - started
    dice, hd95 = score_masks(result.probability.array >= 0.5, truth, target.spacing[::-1])
    reference = untrained.segment(target, templates, text, modality=modality).probability.array >= 0.5
    untrained_dice, _ = score_masks(reference, truth, target.spacing[::-1])
    votes = np.mean([position_transfer(t, target.shape) for t in templates], axis=0)
    baseline, _ = score_masks(votes >= 0.5, truth, target.spacing[::-1])
    row = {"group": group, "case": name, "templates": len(templates), "dice": dice, "hd95_mm": hd95,
           "baseline_dice": baseline, "untrained_dice": untrained_dice, "seconds": seconds,
           "slices": len(result.slice_confidence), "slices_decoded": result.slices_decoded}
    print(json.dumps(row), flush=True)
    return row


def lesion_cases() -> list[tuple[str, Volume, np.ndarray, Template, str]]:
    """(name, target image, its lesion mask, the other patient's lesion as template, modality) per pair."""
    fetch("pyradiomics")
    cases = {c.case_id: c for c in load_manifest("pyradiomics")}
    out = []
    for target, source in (("lung2", "lung1"), ("brain2", "brain1")):
        truth = read_segmentation(cases[target].segmentation).get("lesion").mask
        template_seg = read_segmentation(cases[source].segmentation).get("lesion")
        template = Template(read_volume(cases[source].image), template_seg.mask, "lesion", case_id=source,
                            modality=cases[source].modality)
        out.append((f"{target} lesion <- {source}", read_volume(cases[target].image), truth, template,
                    cases[target].modality))
    return out


def region_cases(regions: int) -> tuple[Volume, dict[str, np.ndarray], list[tuple[Volume, dict[str, np.ndarray]]]]:
    """The `regions` largest Harvard-Oxford regions: the deformed target and its masks, and the three
    template subjects (Colin27 itself, then two other deformations) with theirs."""
    fetch("colin27")
    case = next(c for c in load_manifest("colin27") if c.case_id == "colin27_harvardoxford")
    image = read_volume(case.image)
    segmentation = read_segmentation(case.segmentation)
    largest = sorted(segmentation.segments, key=lambda s: -int(s.mask.sum()))[:regions]
    masks = {s.name: s.mask for s in largest}
    target, target_masks = deformed(image, masks, seed=1)
    return target, target_masks, [(image, masks)] + [deformed(image, masks, seed=seed) for seed in (2, 3)]


def lesion_rows(segmenters) -> list[dict]:
    return [run_case(segmenters, "unseen patient", name, image, truth, [template], "lesion", modality)
            for name, image, truth, template, modality in lesion_cases()]


def region_rows(segmenters, regions: int) -> list[dict]:
    target, target_masks, copies = region_cases(regions)
    rows = []
    for name in target_masks:
        for count in (1, 3):
            templates = [Template(im, m[name], name, case_id=f"colin27_copy{i}", modality="MR")
                         for i, (im, m) in enumerate(copies[:count])]
            rows.append(run_case(segmenters, "unseen structure", name, target, target_masks[name], templates,
                                 name, "MR"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="VESSA checkpoint (default: the shipped starter)")
    parser.add_argument("--regions", type=int, default=8, help="largest Harvard-Oxford regions to score")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write all rows here")
    parser.add_argument("--fine-levels", nargs="*", choices=FINE_LEVELS,
                        help="match these FPN levels besides the embedding instead of the checkpoint's own "
                             "`matching.fine_levels` (no value: the embedding alone)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--slice-step", type=int, default=1, help="sparse pass: decode every k-th slice first")
    parser.add_argument("--template-slice-limit", type=int, default=TEMPLATE_SLICE_LIMIT,
                        help="distinct slices per template (0: no limit)")
    args = parser.parse_args()
    options = {"precision": args.precision, "slice_step": args.slice_step,
               "template_slice_limit": args.template_slice_limit or None}
    print(f"segmenter options: {options}", flush=True)
    segmenter = load_segmenter(args.checkpoint, device=args.device, **options)
    config = segmenter.assistant.config
    if args.fine_levels is not None:
        config.matching = dataclasses.replace(config.matching, fine_levels=args.fine_levels)
    print(f"matching levels: embedding + {config.matching.fine_levels}", flush=True)
    torch.manual_seed(0)
    untrained = VolumeSegmenter(TemplateAssistant(segmenter.assistant.config), device=args.device, **options)
    segmenters = (segmenter, untrained)
    rows = lesion_rows(segmenters) + region_rows(segmenters, args.regions)
    print("\n| group | case | K | Dice | baseline Dice | untrained Dice | HD95 mm | s |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | {r['case']} | {r['templates']} | {r['dice']:.3f} | {r['baseline_dice']:.3f} | "
              f"{r['untrained_dice']:.3f} | {r['hd95_mm']:.1f} | {r['seconds']:.1f} |")
    for group in ("unseen patient", "unseen structure"):
        for count in (1, 3):
            picked = [r for r in rows if r["group"] == group and r["templates"] == count]
            if picked:
                dice = np.array([r["dice"] for r in picked])
                base = np.array([r["baseline_dice"] for r in picked])
                plain = np.array([r["untrained_dice"] for r in picked])
                decoded = sum(r["slices_decoded"] for r in picked) / sum(r["slices"] for r in picked)
                print(f"{group}, K={count}: Dice {dice.mean():.3f} ± {dice.std():.3f} (n={len(picked)}), "
                      f"baseline {base.mean():.3f} ± {base.std():.3f}, "
                      f"untrained {plain.mean():.3f} ± {plain.std():.3f}; slices decoded {decoded:.0%}, "
                      f"{sum(r['seconds'] for r in picked):.1f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
