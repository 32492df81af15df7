"""Sharding: each epoch's shards are disjoint, cover the data, and add up to the 1-rank batch."""

import numpy as np
import pytest

from hvdkit.data import ShardedLoader, eval_shard
from hvdkit.data.samples import ArraySamples


def _loaders(n: int, batch: int, size: int, drop_last: bool,
             prefetch: int = 0) -> list[ShardedLoader]:
    samples = ArraySamples(np.arange(n, dtype=np.float32)[:, None], np.arange(n))
    return [ShardedLoader(samples, batch_size=batch, rank=r, size=size, seed=3,
                          drop_last=drop_last, prefetch=prefetch) for r in range(size)]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_epoch_shards_are_disjoint_and_cover(size: int) -> None:
    loaders = _loaders(103, 8, size, drop_last=False)
    shards = [set(ld.epoch_indices(epoch=2)) for ld in loaders]
    assert sum(map(len, shards)) == 103
    assert set().union(*shards) == set(range(103))


def test_drop_last_drops_only_the_incomplete_global_batch() -> None:
    loaders = _loaders(103, 8, 2, drop_last=True)
    assert loaders[0].steps_per_epoch == 6  # 103 // 16
    covered = set().union(*(set(ld.epoch_indices(0)) for ld in loaders))
    assert len(covered) == 96


@pytest.mark.parametrize("prefetch", [0, 2])
def test_ranks_together_take_the_single_process_batch(prefetch: int) -> None:
    two = _loaders(100, 5, 2, drop_last=True, prefetch=prefetch)
    one = _loaders(100, 10, 1, drop_last=True, prefetch=prefetch)[0]
    for epoch in range(2):
        batches = [list(ld.batches(epoch)) for ld in two]
        for step, (x1, y1) in enumerate(one.batches(epoch)):
            joined = np.concatenate([batches[0][step][0], batches[1][step][0]])
            np.testing.assert_array_equal(np.sort(joined, axis=0), x1)  # x1 is sorted
            np.testing.assert_array_equal(x1[:, 0], y1)


def test_each_batch_is_sorted_for_locality() -> None:
    for idx in _loaders(100, 10, 2, drop_last=False)[1].index_batches(epoch=4):
        assert np.all(np.diff(idx) > 0)


def test_order_is_seeded_and_changes_per_epoch() -> None:
    a, b = _loaders(50, 5, 1, True)[0], _loaders(50, 5, 1, True)[0]
    np.testing.assert_array_equal(a.order(1), b.order(1))
    assert not np.array_equal(a.order(0), a.order(1))


def test_start_step_resumes_mid_epoch() -> None:
    loader = _loaders(64, 4, 2, True)[1]
    full = list(loader.batches(0))
    tail = list(loader.batches(0, start_step=3))
    assert len(tail) == len(full) - 3
    np.testing.assert_array_equal(tail[0][0], full[3][0])


def test_eval_shards_cover_once() -> None:
    parts = [eval_shard(10, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]
