"""Stage-2 step time: supervised vs UniMatch V2 vs UniMatch V2 + VESSA vs DuSSS, same student, same batch.

Each method is built through the trainer's registry (`vessa.train.methods.build_setup`) on a
synthetic on-disk cohort (noisy ellipses; speed does not depend on content) and stepped with
the shared `Trainer`'s own step (forward, backward, clipping, AdamW, schedule, EMA), so the
times are those of `vessa train`. "supervised (same student)" is L_x alone on the stage-2
student (plus its EMA update); "stage2:supervised" is the registry's supervised method (the
same MONAI UNet, MONAI DiceCELoss, flips only). VESSA runs an untrained stage-1 assistant
(speed does not depend on its weights) with every slice refreshed each step
(`vessa_per_step` 0) or a budget of slices per step.
Methods are stepped in turn, `repeats` rounds, on the same batch; the table gives medians of
wall time and of process CPU time (CPU time is the fairer measure on a shared machine: other
processes inflate wall time, not CPU time; with --threads 1 it is single-core time).
With `--loader-steps N` each method then runs N steps on its real batch stream (the trainer's
batch factory, `--workers` DataLoader processes) as `vessa train` does: a second table gives the
seconds per step spent waiting for the batch and in the step, and on CUDA the mean GPU
utilisation over those steps (NVML, sampled every 20 ms).

    .venv/bin/python benchmarks/bench_train.py --image-size 256 --batch-size 8 --repeats 3 --threads 1
    python benchmarks/bench_train.py --device cuda --repeats 10 --loader-steps 50 --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vessa.io import Volume, write_volume
from vessa.jobs import JobSpec
from vessa.jobs.progress import ProgressWriter
from vessa.train.distributed import Runtime
from vessa.train.methods import build_setup
from vessa.train.objective import TrainingSetup
from vessa.train.trainer import Trainer


def write_cohort(root: Path, size: int, depth: int, cases: int) -> Path:
    """`cases` labelled + `cases` unlabelled volumes of `depth` slices size x size."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:size, :size]
    entries = []
    for index in range(2 * cases):
        labels = np.zeros((depth, size, size), np.uint8)
        for k in range(depth):
            (cy, cx), (ry, rx) = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.08, 0.2, 2) * size
            labels[k][((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1] = 1
        image = (labels * 100 + rng.normal(0, 20, labels.shape)).astype(np.float32)
        name = f"case{index}"
        write_volume(Volume(image), root / f"{name}.nrrd")
        entry = {"id": name, "image": f"{name}.nrrd", "segmentation": None,
                 "split": "train" if index < cases else "unlabelled"}
        if index < cases:
            write_volume(Volume(labels), root / f"{name}_label.nrrd")
            entry["segmentation"] = f"{name}_label.nrrd"
        entries.append(entry)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "structures": ["ellipse"], "cases": entries}))
    return manifest


class SupervisedPart:
    """The supervised term L_x of a stage-2 objective alone: the same student's supervised step
    (its EMA teacher is still updated and validated, as in the semi-supervised methods)."""

    def __init__(self, objective: Any):
        self.objective = objective

    def models(self) -> dict[str, nn.Module]:
        return {"student": self.objective.student}

    def parameter_groups(self) -> list[dict[str, Any]]:
        return self.objective.parameter_groups()

    def training_step(self, batch: dict[str, Any], step: int,
                      nets: Mapping[str, nn.Module]) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = self.objective.labelled_views(batch["labelled"])
        loss, _ = self.objective.supervised_loss(nets, images, labels)
        return loss, {}

    def after_step(self, step: int) -> None:
        self.objective.after_step(step)

    def evaluate(self) -> dict[str, float]:
        return self.objective.evaluate()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class GpuUtilisation:
    """Mean GPU utilisation (%) over a `with` block, NVML sampled every 20 ms; None off CUDA."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.mean = device, [], None
        self._stop = threading.Event()

    def _sample(self) -> None:
        import pynvml  # nvidia-ml-py: ships with CUDA PyTorch images; only needed on CUDA runs

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
        while not self._stop.wait(0.02):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._stop.set()
            self._thread.join()
            self.mean = statistics.mean(self.samples) if self.samples else None


def loader_rows(trainers: dict[str, Trainer], setups: dict[str, TrainingSetup], steps: int,
                device: torch.device) -> list[dict[str, Any]]:
    """Each method's `steps` steps on its own batch stream: data wait and step seconds, GPU utilisation."""
    rows = []
    for name, trainer in trainers.items():
        stream = setups[name].batches(0)
        next(stream)  # workers started, first batch out of the way
        waits, computes = [], []
        with GpuUtilisation(device) as utilisation:
            for step in range(steps):
                start = time.perf_counter()
                batch = next(stream)
                ready = time.perf_counter()
                trainer.step = step
                trainer.train_step(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                waits.append(ready - start)
                computes.append(time.perf_counter() - ready)
        wait, compute = statistics.mean(waits), statistics.mean(computes)
        rows.append({"method": name, "data_wait_s": wait, "step_s": compute, "wait_share": wait / (wait + compute),
                     "gpu_utilisation": utilisation.mean})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="labelled and unlabelled slices per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128],
                        help="student UNet channels per level")
    parser.add_argument("--vessa-image-size", type=int, nargs="*", default=[512, 256],
                        help="stage-1 input sizes to time VESSA at (none: no VESSA rows)")
    parser.add_argument("--vessa-budget", type=int, default=2, help="vessa_per_step of the budgeted VESSA rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--loader-steps", type=int, default=0,
                        help="then N steps per method on its real batch stream (data wait, GPU utilisation)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for --loader-steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runtime = Runtime(rank=0, world_size=1, local_rank=0, device=device)
    root = Path(tempfile.mkdtemp(prefix="bench_train_"))
    # several steps per epoch for the loader rows, as in a real cohort
    depth = args.batch_size * (8 if args.loader_steps else 1)
    manifest = write_cohort(root, args.image_size, depth=depth, cases=2)
    common = {"stage": "stage2", "manifest": str(manifest), "structures": ["ellipse"], "image_size": args.image_size,
              "batch_size": args.batch_size, "steps": 1000, "lr": 1e-4, "device": args.device, "amp": True}
    student = {"channels": args.channels, "workers": args.workers}
    variants: dict[str, tuple[str, dict[str, Any]]] = {
        "stage2:supervised": ("supervised", student),
        "supervised (same student)": ("unimatch", student),
        "stage2:unimatch": ("unimatch", student),
        "stage2:unimatch, unlabelled batch B/2": (
            "unimatch", {**student, "unlabelled_batch_size": max(1, args.batch_size // 2)}),
        "stage2:dusss": ("dusss", student),
    }
    for size in args.vessa_image_size:
        vessa = {**student, "vessa_untrained": True, "vessa_image_size": size}
        variants[f"stage2:vessa @{size}, every slice"] = ("vessa", vessa)
        variants[f"stage2:vessa @{size}, {args.vessa_budget}/step"] = (
            "vessa", {**vessa, "vessa_per_step": args.vessa_budget})
    trainers, setups, batches = {}, {}, {}
    for name, (method, options) in variants.items():
        spec = JobSpec(method=method, output_dir=str(root / name.replace(" ", "_")), options=options, **common)
        setup = build_setup(spec, runtime)
        if name.startswith("supervised (same student)"):
            setup = TrainingSetup(SupervisedPart(setup.objective), setup.batches)
        trainers[name] = Trainer(spec, setup, runtime, progress=ProgressWriter(enabled=False))
        setups[name] = setup
        batches[name] = next(setup.batches(0))
    labelled = batches["stage2:unimatch"]["labelled"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # round 0 warms up
        for name, trainer in trainers.items():
            batch = labelled if variants[name][0] == "supervised" else {"labelled": labelled,
                                                                         "unlabelled": batches[name]["unlabelled"]}
            trainer.step = repeat
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            trainer.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
    baseline = statistics.median(times["supervised (same student)"])
    cpu_baseline = statistics.median(cpu_times["supervised (same student)"])
    rows = [{"method": name, "median_s": statistics.median(t), "min_s": min(t),
             "ratio": statistics.median(t) / baseline, "cpu_s": statistics.median(cpu_times[name]),
             "cpu_ratio": statistics.median(cpu_times[name]) / cpu_baseline} for name, t in times.items()]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"image {args.image_size}², batch {args.batch_size} labelled + {args.batch_size} unlabelled, student "
          f"MONAI UNet {tuple(args.channels)}, device {args.device}, {args.repeats} rounds; {machine}")
    print("| method | wall s/step (median) | wall × supervised | CPU s/step (median) | CPU × supervised |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['median_s']:.3f} | {row['ratio']:.2f} | {row['cpu_s']:.3f} | "
              f"{row['cpu_ratio']:.2f} |")
    loading = loader_rows(trainers, setups, args.loader_steps, device) if args.loader_steps else []
    if loading:
        print(f"\n{args.loader_steps} steps per method on its batch stream, {args.workers} loader workers:")
        print("| method | data wait s/step | step s/step | wait share | GPU utilisation |")
        print("|---|---|---|---|---|")
        for row in loading:
            gpu = "n/a" if row["gpu_utilisation"] is None else f"{row['gpu_utilisation']:.0f} %"
            print(f"| {row['method']} | {row['data_wait_s']:.4f} | {row['step_s']:.4f} | "
                  f"{100 * row['wait_share']:.1f} % | {gpu} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine,
                                         "rows": rows, "loader_rows": loading}, indent=2))


if __name__ == "__main__":
    main()
