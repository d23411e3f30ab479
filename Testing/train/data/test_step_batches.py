"""StepBatches: the stream is the pure function of the step, with or without worker processes."""

import numpy as np
import pytest
import torch

from vessa.errors import JobError
from vessa.train.data.batches import StepBatches
from vessa.train.distributed import Runtime

CPU = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def batch_of(step: int) -> dict:
    rng = np.random.default_rng([7, step])
    return {"step": step, "image": torch.from_numpy(rng.random((2, 3), dtype=np.float32)), "text": ["a", "b"]}


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_starts_at_any_step_and_matches_the_function(workers):
    stream = StepBatches(batch_of, CPU, num_workers=workers)(5)
    got = [next(stream) for _ in range(6)]
    assert [b["step"] for b in got] == list(range(5, 11))  # in step order, also with 2 workers
    for batch in got:
        assert torch.equal(batch["image"], batch_of(batch["step"])["image"]) and batch["text"] == ["a", "b"]


def test_negative_workers_is_refused():
    with pytest.raises(JobError, match="num_workers"):
        StepBatches(batch_of, CPU, num_workers=-1)
