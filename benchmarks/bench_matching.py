"""Stage-1 matching: how well the similarity maps and the prompts cut from them find the structure.

The prompts (points, box, dense mask) are VESSA's own guess of where the structure is, before the
decoder and before the location prior; this script scores that guess alone, for the matching
levels of `MatchingConfig.fine_levels`: the embedding alone (stride 16, `[]`), + s1 (stride 8),
+ s1 + s0 (stride 4, the default for new models). Same cases as bench_quality.py: the
Harvard-Oxford regions of a deformed Colin27 with Colin27 itself as the one template, and the
lesions of lung2 / brain2 from lung1 / brain1. Per case, up to `--slices` target slices holding
the structure (evenly spaced), each with the template slice the segmenter would pick (relative
position, nearest slice showing the structure). Scores per slice, in the model's square frame:
region Dice (the prompter's region {rescaled similarity >= box_threshold} on its grid, upsampled,
vs the true mask), hits (share of positive points inside the true mask), box IoU (prompt box vs
the true mask's bounding box). Columns for the given checkpoint and the same layout untrained.

    python benchmarks/bench_matching.py --regions 8 --slices 6
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from bench_quality import colin27_atlas, deformed_subjects, lesion_cases

from vessa.io import Template, Volume
from vessa.model import load_segmenter
from vessa.model.assistant import TemplateAssistant
from vessa.model.intensity import normalize_for_sam
from vessa.model.matching import masked_prototypes, rescale_maps
from vessa.model.sam2_adapter import ImageFeatures
from vessa.model.slicing import array_spacing, slicing_axis
from vessa.model.volume_segmenter import (  # the segmenter's own slicing, so the slices are its slices
    VolumeSlices,
    template_plan,
)

CT_WINDOW = "soft_tissue"  # VolumeSegmenter's default
LEVELS = {"embedding": [], "embedding+s1": ["s1"], "embedding+s1+s0": ["s1", "s0"]}


def pair_slices(target: Volume, truth: np.ndarray, template: Template, size: int, modality: str,
                count: int) -> tuple[torch.Tensor, ...]:
    """Target slices holding the structure (at most `count`) and their masks, and the template slice
    and mask the segmenter picks for each, all cut and framed by the segmenter's own code
    (`vessa.model.volume_segmenter`): model inputs [m, 3, S, S], masks [m, 1, S, S]."""
    axis = slicing_axis(target.shape, target.spacing)
    cut = VolumeSlices(target.array, array_spacing(target.spacing), axis, size, modality, CT_WINDOW, None)
    stack = np.moveaxis(truth, axis, 0)
    present = np.flatnonzero(stack.any(axis=(1, 2)))
    rows = present[np.unique(np.linspace(0, len(present) - 1, count).round().astype(int))]
    masks = cut.frame.to_square(torch.from_numpy(stack[rows].astype(np.float32))[:, None]).clamp(0, 1)
    plan = template_plan(template, target, axis, size, len(cut), CT_WINDOW, keyed=False)
    picks = plan.chosen[rows]
    cpu = torch.device("cpu")
    return (normalize_for_sam(cut.square(rows, cpu)), masks,
            normalize_for_sam(plan.slices.square(plan.used[picks], cpu)), plan.masks[picks])


def box_iou(box: torch.Tensor, mask: torch.Tensor) -> float:
    """IoU of a pixel box (x0, y0, x1, y1, inclusive) with the bounding box of mask [S, S]."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    truth = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
    low, high = torch.maximum(box[:2], truth[:2]), torch.minimum(box[2:], truth[2:])
    inter = (high - low + 1).clamp(min=0).prod()
    area = (box[2:] - box[:2] + 1).prod() + (truth[2:] - truth[:2] + 1).prod() - inter
    return float(inter / area)


@torch.inference_mode()
def score(assistant: TemplateAssistant, features: ImageFeatures, masks: torch.Tensor, template_masks: torch.Tensor,
          levels: list[str]) -> dict[str, float]:
    """Mean region Dice, point hits and box IoU of the prompts over the slices of one case
    (`features`: the target slices' then the template slices' encoder features)."""
    count, size = len(masks), assistant.image_size
    target, template = features[:count], features[count:]
    fine = [(getattr(target, level), masked_prototypes(getattr(template, level), template_masks)[:, None])
            for level in levels]
    match = assistant.matcher(target.embedding, template.embedding[:, None], template_masks[:, None], fine)
    prompts = assistant.prompter(match.similarity, match.bg_similarity)
    threshold = assistant.config.matching.box_threshold
    region = rescale_maps(match.similarity.float(), threshold) >= threshold
    region = F.interpolate(region.float(), size=(size, size), mode="nearest")[:, 0] > 0
    truth = masks[:, 0] >= 0.5
    dice = 2 * (region & truth).sum((1, 2)) / (region.sum((1, 2)) + truth.sum((1, 2))).clamp(min=1)
    xy = prompts.point_coords.round().long().clamp(0, size - 1)
    inside = truth[torch.arange(count)[:, None], xy[..., 1], xy[..., 0]]
    positive = prompts.point_labels == 1
    hits = (inside & positive).sum() / positive.sum().clamp(min=1)
    ious = [box_iou(prompts.boxes[i], truth[i]) for i in range(count)]
    return {"region_dice": float(dice.mean()), "point_hits": float(hits), "box_iou": float(np.mean(ious))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="VESSA checkpoint (default: the shipped starter)")
    parser.add_argument("--regions", type=int, default=8, help="largest Harvard-Oxford regions to score")
    parser.add_argument("--slices", type=int, default=6, help="target slices per case")
    parser.add_argument("--json", help="write all rows here")
    args = parser.parse_args()
    trained = load_segmenter(args.checkpoint, device="cpu", cache_mib=0).assistant.eval()
    torch.manual_seed(0)
    untrained = TemplateAssistant(trained.config).eval()
    size = trained.image_size
    cases = [("unseen patient", name, image, truth, template, modality)
             for name, image, truth, template, modality in lesion_cases()]
    target, target_masks, copies = deformed_subjects(*colin27_atlas("harvardoxford"), args.regions)
    image, masks = copies[0]
    for name in target_masks:
        template = Template(image, masks[name], name, case_id="colin27", modality="MR")
        cases.append(("unseen structure", name, target, target_masks[name], template, "MR"))
    rows = []
    for group, name, volume, truth, template, modality in cases:
        images, masks, template_images, template_masks = pair_slices(volume, truth, template, size, modality,
                                                                     args.slices)
        keep = masks.flatten(1).amax(1) >= 0.5  # slices where the structure survives the model's frame
        if not keep.any():
            print(f"{name}: no slice keeps the structure at {size} px; skipped", flush=True)
            continue
        images, masks, template_images, template_masks = (t[keep] for t in (images, masks, template_images,
                                                                              template_masks))
        for model_name, model in (("trained", trained), ("untrained", untrained)):
            with torch.inference_mode():
                features = model.encode(torch.cat([images, template_images]))
            for levels_name, levels in LEVELS.items():
                row = {"group": group, "case": name, "model": model_name, "levels": levels_name,
                       **score(model, features, masks, template_masks, levels)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| group | model | levels | region Dice | positive points in the structure | box IoU |\n"
          "|---|---|---|---|---|---|")
    for group in ("unseen patient", "unseen structure"):
        for model_name in ("trained", "untrained"):
            for levels_name in LEVELS:
                picked = [r for r in rows if (r["group"], r["model"], r["levels"]) == (group, model_name, levels_name)]
                means = {k: np.mean([r[k] for r in picked]) for k in ("region_dice", "point_hits", "box_iou")}
                print(f"| {group} (n={len(picked)}) | {model_name} | {levels_name} | {means['region_dice']:.3f} | "
                      f"{means['point_hits']:.3f} | {means['box_iou']:.3f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
