"""EpochBatches: infinite seeded batches that restart at any step with the same content."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch.utils.data import Dataset

from vessa.errors import JobError
from vessa.train.data.batches import EpochBatches
from vessa.train.distributed import Runtime


class Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def runtime(rank: int = 0, world_size: int = 1) -> Runtime:
    return Runtime(rank, world_size, rank, torch.device("cpu"))


def take(factory, start: int, count: int) -> list[list[int]]:
    return [batch.tolist() for batch in itertools.islice(factory(start), count)]


def test_epochs_are_reshuffled_and_cover_the_data():
    batches = EpochBatches(Numbers(10), batch_size=3, seed=7, runtime=runtime())
    assert batches.steps_per_epoch == 3  # the remainder (1 sample) is dropped
    first, second = take(batches, 0, 3), take(batches, 3, 3)
    assert len(set(sum(first, []))) == 9 and first != second


@pytest.mark.parametrize("start", [1, 2, 3, 5, 7])
def test_starting_at_step_n_continues_the_same_stream(start):
    batches = EpochBatches(Numbers(10), batch_size=3, seed=7, runtime=runtime())
    assert take(batches, start, 4) == take(batches, 0, start + 4)[start:]


def test_workers_give_the_same_stream_across_epochs_from_one_set_of_processes(monkeypatch):
    plain = EpochBatches(Numbers(10), batch_size=3, seed=7, runtime=runtime())
    ahead = EpochBatches(Numbers(10), batch_size=3, seed=7, runtime=runtime(), num_workers=2)
    loaders = []
    real_loader = torch.utils.data.DataLoader

    def counting_loader(*args, **kwargs):
        loaders.append(kwargs["num_workers"])
        return real_loader(*args, **kwargs)

    monkeypatch.setattr("vessa.train.data.batches.DataLoader", counting_loader)
    assert take(ahead, 2, 8) == take(plain, 2, 8)  # 8 steps: 3 epochs of 3 steps
    assert loaders == [2, 0]  # one loader (one set of workers) for all epochs


def test_a_new_object_with_the_same_seed_gives_the_same_batches_and_another_seed_does_not():
    make = lambda seed: EpochBatches(Numbers(10), batch_size=2, seed=seed, runtime=runtime())  # noqa: E731
    assert take(make(1), 0, 10) == take(make(1), 0, 10)
    assert take(make(1), 0, 10) != take(make(2), 0, 10)


def test_building_batches_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(0)
    random.seed(0)
    take(EpochBatches(Numbers(10), batch_size=2, seed=3, runtime=runtime()), 4, 6)
    assert (torch.rand(1), random.random()) == expected


def test_ranks_get_disjoint_equal_shares():
    shares = [EpochBatches(Numbers(11), batch_size=2, seed=0, runtime=runtime(rank, 2)) for rank in (0, 1)]
    assert [s.steps_per_epoch for s in shares] == [2, 2]
    rank0, rank1 = (sum(take(s, 0, 2), []) for s in shares)
    assert not set(rank0) & set(rank1)


def test_too_little_data_for_one_batch_per_rank():
    with pytest.raises(JobError, match="tiny set has 3 samples, fewer than batch_size \\(2\\) x processes \\(2\\)"):
        EpochBatches(Numbers(3), batch_size=2, seed=0, runtime=runtime(0, 2), what="tiny set")
