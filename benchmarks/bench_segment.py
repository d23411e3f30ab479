"""Stage-1 segmentation speed: bare image encoder vs `vessa segment` vs sam2's own predictor loop.

One `TemplateAssistant` serves all four: random weights by default (speed does not depend on them, except
with a sparse pass `--slice-step k`, which decodes the slices next to what the model finds), or trained ones
with `--checkpoint` (their model layout then overrides --model/--image-size/--fine-levels/--location-prior):
(1) encoder:   `assistant.encode` (sam2 `forward_image`) on the prepared target slices, same batch as (2);
(2) vessa:     `VolumeSegmenter.segment` on the volume: intensity, slicing, template encoding, matching,
               prompts, memory attention, decoding and mapping back to the grid, all included;
(3) sam2 loop: sam2's `SAM2ImagePredictor` on the assistant's sam2 model (`sam2_adapter.image_predictor`,
               feature sizes set for the model's image size), `set_image` + `predict(box=...)` per slice (a fixed
               central box);
(2r) vessa re-run: (2) again on the same volume and templates with the segmenter's feature cache
               filled by an untimed first call (the Segment Editor effect's re-run after Cancel, or
               another structure of the same volume from the same template images): what is left is
               template memory, matching, memory attention, decoding. (2) itself runs without the cache.
Precision `--precision` for all four (default "auto": bf16 autocast on CUDA and on CPUs with bf16
instructions, else float32). The pipelines run interleaved, `--repeats` rounds of
(1), (2), (3), (2r) after one warm-up round on 2 slices; the table gives medians. `--slices N` times N evenly
spaced slices (a volume of N slices along the slicing axis, spacing scaled, so the share of template
slices that (2) encodes stays that of the whole volume) and extrapolates s/volume linearly.
Peak memory above the pipeline's start (the shared weights, printed apart, excluded): CUDA
`max_memory_allocated`; CPU: RSS (after glibc `malloc_trim`) sampled with psutil every 2 ms. Ratios are
given on wall time and on process CPU time (steadier on a loaded machine).
`--flops`: each pipeline once more under torch's `FlopCounterMode` (matmuls, convolutions and attention,
counted with the math attention kernel; elementwise work not counted): GFLOP per volume, the GFLOP/s its
timed median reached, and the ratios the FLOPs alone allow ((2)/(1) can be at most FLOP(1)/FLOP(2) at equal
efficiency).

    .venv/bin/python benchmarks/bench_segment.py --model tiny --image-size 512 --slices 16 --json out.json
    .venv/bin/python benchmarks/bench_segment.py --checkpoint vessa-starter --region largest --slice-step 2
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import ctypes.util
import json
import os
import platform
import pstats
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from bench_quality import colin27_atlas, deformed_subjects
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vessa.io import Template, Volume, read_volume
from vessa.model.assistant import TemplateAssistant
from vessa.model.checkpoint import load_assistant
from vessa.model.config import FINE_LEVELS, PRECISIONS, MatchingConfig, ModelConfig
from vessa.model.device import autocast, resolve_device
from vessa.model.intensity import intensity_range, normalize_for_sam, to_unit_range
from vessa.model.sam2_adapter import image_predictor
from vessa.model.slicing import SquareFrame, array_spacing, slicing_axis, template_slices
from vessa.model.volume_segmenter import TEMPLATE_SLICE_LIMIT, VolumeSegmenter
from vessa.samples import load_manifest
from vessa.segment import templates_from_pairs
from vessa.weights import resolve_weights

PIPELINES = {"encoder": "(1) bare image encoder", "vessa": "(2) vessa segment",
             "sam2_loop": "(3) SAM2ImagePredictor loop", "vessa_rerun": "(2r) vessa segment, re-run (features cached)"}
LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def synthetic_ct(shape: tuple[int, int, int], seed: int) -> tuple[Volume, np.ndarray]:
    """A CT-like volume in HU (air, a soft-tissue body, a brighter ellipsoid lesion, noise) and the lesion mask."""
    rng = np.random.default_rng(seed)
    z, y, x = (((np.arange(n) + 0.5) / n - 0.5).reshape([-1 if a == i else 1 for a in range(3)])
               for i, n in enumerate(shape))
    centre = rng.uniform(-0.05, 0.05, 3)
    lesion = ((z - centre[0]) / 0.15) ** 2 + ((y - centre[1]) / 0.12) ** 2 + ((x - centre[2]) / 0.12) ** 2 <= 1
    image = rng.standard_normal(shape, dtype=np.float32) * 15
    image += np.where((y / 0.4) ** 2 + (x / 0.45) ** 2 <= 1, 40.0, -1000.0).astype(np.float32)
    image[lesion] += 60
    return Volume(image, spacing=(0.7, 0.7, 2.5)), lesion


def load_inputs(args: argparse.Namespace) -> tuple[Volume, list[Template]]:
    """The target volume and `--templates` templates (synthetic; pyradiomics cases for `--image`;
    for `--region`, bench_quality's deformed Colin27 and its template subjects)."""
    if args.region:
        target, _, copies = deformed_subjects(*colin27_atlas("harvardoxford"), args.region_count)
        names = list(copies[0][1])  # largest first
        if args.region != "largest" and args.region not in names:
            raise SystemExit(f"--region {args.region}: not among the {len(names)} largest Harvard-Oxford regions "
                             f"({', '.join(names)}); raise --region-count or give 'largest'")
        name = names[0] if args.region == "largest" else args.region
        args.text, args.modality = name, "MR"
        return target, [Template(image, masks[name], name, case_id=f"colin27_copy{i}", modality="MR")
                        for i, (image, masks) in enumerate(copies[: args.templates])]
    if args.image is None:
        image, _ = synthetic_ct(tuple(args.shape), seed=0)
        return image, [Template(*synthetic_ct(tuple(args.shape), seed), args.text, case_id=f"synthetic{seed}",
                                modality="CT") for seed in range(1, args.templates + 1)]
    cases = [c for c in load_manifest("pyradiomics") if c.modality == args.modality and args.text in c.segment_names
             and c.image.resolve() != Path(args.image).resolve()]
    pairs = [f"{c.image},{c.segmentation}" for c in cases[: args.templates]]
    return read_volume(args.image), templates_from_pairs(pairs, args.text)


def strided(image: Volume, axis: int, count: int) -> Volume:
    """`count` evenly spaced slices of `image` along array `axis` (spacing scaled), or `image` itself."""
    total = image.shape[axis]
    if count >= total:
        return image
    spacing = image.spacing.copy()
    spacing[2 - axis] *= (total - 1) / max(count - 1, 1)
    index = np.linspace(0, total - 1, count).round().astype(int)
    return Volume(np.take(image.array, index, axis), spacing, image.origin, image.direction)


def template_slice_count(templates: list[Template], axis: int, count: int, limit: int | None) -> int:
    """Template slices (2) encodes for `count` target slices (templates oriented like the target)."""
    masks = [np.moveaxis(t.mask, axis, 0) for t in templates]
    return sum(len(np.unique(template_slices(count, np.flatnonzero(m.any(axis=(1, 2))), len(m), limit)))
               for m in masks)


class PeakMemory:
    """Peak memory of a block (see the module docstring); `.bytes` after exit."""

    def __init__(self, device: torch.device):
        self.device, self.process, self.bytes = device, psutil.Process(), 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.bytes = max(self.bytes, self.process.memory_info().rss - self.start)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            if hasattr(LIBC, "malloc_trim"):
                LIBC.malloc_trim(0)  # give memory freed by the previous pipeline back, so the peaks are its own
            self.start = self.process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self._stop.set()
            self._thread.join()
            self.bytes = max(self.bytes, self.process.memory_info().rss - self.start)


def pipelines(segmenter: VolumeSegmenter, cached: VolumeSegmenter, volume: Volume, templates: list[Template],
              text: str, axis: int, modality: str, decoded: list[int]) -> dict:
    """name -> callable(n) running the pipeline on n slices of `volume` (the first n; (2): n evenly spaced);
    (2) appends the slices it decoded to `decoded`."""
    assistant, device, size = segmenter.assistant, segmenter.device, segmenter.assistant.image_size
    precision = segmenter.precision
    stack = np.moveaxis(to_unit_range(volume.array, *intensity_range(volume.array, modality)), axis, 0)
    row_spacing, col_spacing = (array_spacing(volume.spacing)[a] for a in range(3) if a != axis)
    frame = SquareFrame.for_slices(stack.shape[1], stack.shape[2], row_spacing, col_spacing, size)
    images = normalize_for_sam(frame.to_square(torch.from_numpy(np.ascontiguousarray(stack))[:, None]).to(device))
    images = images.contiguous(memory_format=torch.channels_last)  # as VolumeSegmenter._prepare
    rgb = np.repeat((stack * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    predictor = image_predictor(assistant.sam)
    height, width = stack.shape[1:]
    box = np.array([width // 4, height // 4, 3 * width // 4, 3 * height // 4])  # x0, y0, x1, y1

    def encoder(n: int) -> None:
        with torch.inference_mode(), autocast(device, precision):
            for start in range(0, n, segmenter.batch_size):
                assistant.encode(images[start : min(n, start + segmenter.batch_size)])

    def vessa(n: int) -> None:
        result = segmenter.segment(strided(volume, axis, n), templates, text, modality=modality)
        decoded.append(result.slices_decoded)
        if result.axis != axis:
            raise RuntimeError(f"vessa cut along axis {result.axis}, the benchmark along {axis}")

    def vessa_rerun(n: int) -> None:
        cached.segment(strided(volume, axis, n), templates, text, modality=modality)

    def sam2_loop(n: int) -> None:
        with torch.inference_mode(), autocast(device, precision):
            for image in rgb[:n]:
                predictor.set_image(image)
                predictor.predict(box=box, multimask_output=True)

    return {"encoder": encoder, "vessa": vessa, "sam2_loop": sam2_loop, "vessa_rerun": vessa_rerun}


def measure(run, n: int, device: torch.device) -> dict[str, float]:
    """Wall and process-CPU seconds and peak memory bytes of `run(n)`."""
    with PeakMemory(device) as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        run(n)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "peak_bytes": memory.bytes}


def count_flops(run, n: int) -> dict[str, int]:
    """FLOPs of `run(n)`, in all ("total") and per top-level module class (ImageEncoder, MemoryAttention, ...);
    torch's FlopCounterMode, attention through the math kernel so that it is counted."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False, depth=1) as counter:
        run(n)
    parts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items() if "." not in name}
    return {"total": parts.pop("Global", 0)} | dict(sorted(parts.items(), key=lambda item: -item[1]))


def summarise(samples: dict[str, list[dict[str, float]]], count: int, total: int, cuda: bool, full_ct: bool,
              weights_mib: float, flops: dict[str, dict[str, int]]) -> dict:
    """Per-pipeline medians (and GFLOP, GFLOP/s with `flops`) and the target checks; ratios on wall and on CPU
    time."""
    rows = {}
    for name, runs in samples.items():
        wall, cpu = (statistics.median(s[key] for s in runs) for key in ("wall_s", "cpu_s"))
        rows[name] = {"wall_s": wall, "cpu_s": cpu, "slices_per_s": count / wall, "s_per_volume": wall * total / count,
                      "cpu_s_per_volume": cpu * total / count, "peak_mib": max(s["peak_bytes"] for s in runs) / 2**20,
                      "samples": runs}
    ours = rows["vessa"]
    if flops:
        for name, parts in flops.items():
            rows[name] |= {"gflop_per_volume": parts["total"] * total / count / 1e9,
                           "gflop_per_s": parts["total"] / rows[name]["wall_s"] / 1e9, "flops": parts}

    def speedup(other: str, target: float, pipeline: str = "vessa") -> dict:
        wall, cpu = (rows[other][key] / rows[pipeline][key] for key in ("wall_s", "cpu_s"))
        return {"wall": wall, "cpu": cpu, "target": f">= {target:g}", "met": wall >= target}

    limit_s = 3.0 if cuda else 120.0
    checks = {"(2) / (1) slices/s": speedup("encoder", 0.8), "(2) / (3) slices/s": speedup("sam2_loop", 3.0),
              "(2r) / (1) slices/s (re-run)": speedup("encoder", 0.8, "vessa_rerun"),
              "(2r) / (3) slices/s (re-run)": speedup("sam2_loop", 3.0, "vessa_rerun"),
              f"(2) s/volume ({'GPU' if cuda else 'CPU'})": {
                  "wall": ours["s_per_volume"], "cpu": ours["cpu_s_per_volume"], "target": f"<= {limit_s:g} s",
                  "met": ours["s_per_volume"] <= limit_s if full_ct else "n/a: input is not 200x512x512"}}
    if cuda:
        gib = (ours["peak_mib"] + weights_mib) / 1024
        checks["(2) peak GPU memory GiB (+ weights)"] = {"wall": gib, "cpu": gib, "target": "<= 4", "met": gib <= 4}
    return {"pipelines": rows, "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="sam2 variant or preset (tiny, half_tiny, small, ...)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512], help="synthetic CT (k, j, i)")
    parser.add_argument("--image", help="a real volume instead (templates: other pyradiomics cases)")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--text", default="lesion", help="structure name (and text prompt)")
    parser.add_argument("--region", help="instead: bench_quality's deformed Colin27 and this Harvard-Oxford region "
                                         "(a name among the --region-count largest; 'largest' for the largest)")
    parser.add_argument("--region-count", type=int, default=1, help="largest Harvard-Oxford regions to load")
    parser.add_argument("--checkpoint", help="trained weights (file or `vessa weights` name, e.g. vessa-starter) "
                                             "instead of random ones; the model layout options are then its own")
    parser.add_argument("--templates", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--slices", type=int, default=0, help="time N evenly spaced slices (0: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--location-prior", type=float, default=0.0,
                        help="the model's location prior gate (the shipped starter: 4; 0 = off)")
    parser.add_argument("--fine-levels", nargs="*", choices=FINE_LEVELS, default=list(FINE_LEVELS),
                        help="FPN levels matched besides the embedding (default: the new-model default; no "
                             "value: the embedding alone, the shipped starter's matching)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="for all four pipelines")
    parser.add_argument("--slice-step", type=int, default=1,
                        help="(2) and (2r): decode every k-th slice first, the rest beside the structure")
    parser.add_argument("--template-slice-limit", type=int, default=TEMPLATE_SLICE_LIMIT,
                        help="(2) and (2r): distinct slices encoded per template (0: no limit)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--flops", action="store_true", help="count each pipeline's FLOPs (one more run each)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then run (2) once more under cProfile (CPU time; wall time on CUDA) and print "
                             "its top N functions")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    image, templates = load_inputs(args)
    if args.checkpoint:  # trained weights and their layout
        assistant = load_assistant(resolve_weights(args.checkpoint))
        config = assistant.config
        args.model, args.image_size = config.sam2_config, config.image_size
        args.fine_levels = config.matching.fine_levels
    else:
        assistant = TemplateAssistant(ModelConfig(sam2_config=args.model, image_size=args.image_size,
                                                  matching=MatchingConfig(fine_levels=args.fine_levels),
                                                  location_prior=args.location_prior))
    limit = args.template_slice_limit or None
    options = {"batch_size": args.batch_size, "precision": args.precision, "slice_step": args.slice_step,
               "template_slice_limit": limit}
    segmenter = VolumeSegmenter(assistant, device=resolve_device(args.device), cache_mib=0, **options)
    cached = VolumeSegmenter(assistant, device=segmenter.device, cache_mib=2**16, **options)
    device, axis = segmenter.device, slicing_axis(image.shape, image.spacing)
    total = image.shape[axis]
    count = min(args.slices or total, total)
    decoded: list[int] = []
    runs = pipelines(segmenter, cached, strided(image, axis, count), templates, args.text, axis, args.modality,
                     decoded)
    for run in runs.values():  # warm-up
        run(min(2, count))
    runs["vessa_rerun"](count)  # fills the cache (untimed)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            samples[name].append(measure(run, count, device))
    cuda, extrapolated = device.type == "cuda", count < total
    weights_mib = sum(t.numel() * t.element_size() for t in [*assistant.parameters(), *assistant.buffers()]) / 2**20
    flops = {name: count_flops(run, count) for name, run in runs.items()} if args.flops else {}
    result = summarise(samples, count, total, cuda, image.shape == (200, 512, 512), weights_mib, flops)
    machine = (torch.cuda.get_device_name(device) if cuda else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"{torch.get_num_threads()} torch threads, load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    memory_kind = f"{'max_memory_allocated' if cuda else 'RSS'} above start, weights ({weights_mib:.0f} MiB) apart"
    with autocast(device, args.precision):
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    print(f"\nmodel {args.model} @ {args.image_size}, device {device}, {str(dtype).removeprefix('torch.')}, "
          f"batch {args.batch_size}, matching levels embedding + {args.fine_levels}, slice step {args.slice_step}, "
          f"template slice limit {limit}, torch {torch.__version__}; {machine}")
    source = f"Colin27 (deformed) {args.text}" if args.region else args.image or "synthetic CT"
    print(f"weights: {args.checkpoint or 'random'}")
    print(f"input {source} {image.shape}, {total} slices along axis {axis}; "
          f"{len(templates)} template(s), (2) encodes {template_slice_count(templates, axis, count, limit)} template "
          f"slices for {count} target slices ({template_slice_count(templates, axis, total, limit)} for all {total}) "
          f"and (2) decodes {decoded[-1]} of the {count} target slices; "
          f"{count} slices timed, {args.repeats} round(s), medians; (2r) feature cache "
          f"{cached.cache.bytes / 2**20:.0f} MiB"
          + (f"; s/volume EXTRAPOLATED x{total / count:.2f} from {count} evenly spaced slices" if extrapolated else ""))
    print(f"\n| pipeline | wall s ({count} slices) | CPU s | slices/s | s/volume ({total} slices"
          f"{', extrapolated' if extrapolated else ''}) | peak MiB ({memory_kind}) |\n|---|---|---|---|---|---|")
    for name, row in result["pipelines"].items():
        print(f"| {PIPELINES[name]} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['slices_per_s']:.2f} | "
              f"{row['s_per_volume']:.1f} | {row['peak_mib']:.0f} |")
    print("\n| check | value (wall) | value (CPU time) | target | met |\n|---|---|---|---|---|")
    for label, c in result["checks"].items():
        met = c["met"] if isinstance(c["met"], str) else "yes" if c["met"] else "NO"
        print(f"| {label} | {c['wall']:.2f} | {c['cpu']:.2f} | {c['target']} | {met} |")
    if flops:
        rows = result["pipelines"]
        print(f"\n| pipeline | GFLOP per volume ({total} slices) | GFLOP/s reached |\n|---|---|---|")
        for name, row in rows.items():
            print(f"| {PIPELINES[name]} | {row['gflop_per_volume']:.0f} | {row['gflop_per_s']:.0f} |")
        ours = flops["vessa"]
        print("(2) by module: " + ", ".join(f"{name} {value / ours['total']:.0%}" for name, value in ours.items()
                                            if name != "total" and value >= 0.005 * ours["total"]))
        print(f"FLOPs allow at most (2) / (1) = {flops['encoder']['total'] / ours['total']:.2f} and (2) / (3) = "
              f"{flops['sam2_loop']['total'] / ours['total']:.2f} at equal GFLOP/s")
    if args.profile:
        # CPU time on CPU; wall time on CUDA, where the host waits for kernels and CPU time is spread over threads
        profile = cProfile.Profile(time.perf_counter if segmenter.device.type == "cuda" else time.process_time)
        profile.runcall(runs["vessa"], count)
        pstats.Stats(profile).sort_stats("cumulative").print_stats("vessa|sam2|torch._C", args.profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": config, "device": str(device), "machine": machine,
                                         "input_shape": image.shape, "slices_total": total, "slices_timed": count,
                                         "extrapolated": extrapolated, "memory": memory_kind,
                                         "slices_decoded": decoded, **result}, indent=2))


if __name__ == "__main__":
    main()
