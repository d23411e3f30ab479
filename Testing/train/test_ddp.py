"""Data-parallel smoke run: `torchrun --nproc_per_node 2 -m vessa.cli train` on gloo (CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from job_process import JobProcess, write_spec

from vessa.jobs import parse_progress_line, read_status
from vessa.train.training_checkpoint import find_checkpoints, load_checkpoint


def test_two_cpu_processes_train_with_rank_0_output_and_checkpoints(make_spec, tmp_path):
    # 8 training slices / 2 ranks / batch 2 = 2 steps per epoch, so 6 steps cross two epochs.
    spec_path, job = write_spec(make_spec, tmp_path, steps=6, checkpoint_every=3, log_every=2)
    run = JobProcess("--spec", str(spec_path),
                     launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    assert run.finish() == 0, run.stderr[-3000:]
    events = [e["event"] for e in run.events]
    assert events == ["started", "progress", "checkpoint", "progress", "progress", "checkpoint", "finished"]
    assert all(parse_progress_line(line) for line in run.stdout)  # nothing else, and only rank 0, on stdout
    assert run.of("started")[0]["world_size"] == 2
    assert [s for s, _ in find_checkpoints(job)] == [3, 6]
    state = load_checkpoint(Path(run.of("finished")[0]["checkpoint"]))
    assert state.step == 6 and len(state.rng) == 2  # one RNG state per rank, for exact resume
    assert not torch.equal(state.rng[0]["torch"], state.rng[1]["torch"])  # ranks augment differently
    with (job / "metrics.csv").open() as stream:
        assert [row["step"] for row in csv.DictReader(stream)] == ["2", "3", "4", "6"]
    assert read_status(job)["state"] == "finished"
