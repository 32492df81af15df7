"""The input path: batches prepared ahead in a thread, decoded by worker processes, and files
read a batch at a time without the process growing to their size."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hvdkit.data import ShardedLoader, to_source
from hvdkit.data.prefetch import prefetched
from hvdkit.data.samples import ArraySamples
from hvdkit.data.workers import start_workers
from hvdkit.errors import UserError
from hvdkit.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]


class Recorded(ArraySamples):
    """Array samples that note which thread took each batch, and fail at batch `fail_at`."""

    def __init__(self, n: int, fail_at: int = -1) -> None:
        super().__init__(np.arange(n, dtype=np.float32)[:, None], np.arange(n))
        self.threads: list[str] = []
        self.fail_at = fail_at

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(self.threads) == self.fail_at:
            raise UserError("batch failed")
        self.threads.append(threading.current_thread().name)
        return super().take(idx)


def _plan(n: int, batch: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + batch, n)) for s in range(0, n, batch)]


def test_prefetch_keeps_order_runs_the_stage_and_works_in_a_thread() -> None:
    samples = Recorded(50)
    direct = list(prefetched(samples, _plan(50, 8), depth=0))
    ahead = list(prefetched(samples, _plan(50, 8), depth=2,
                            stage=lambda x, y: (x * 2, y)))
    assert len(direct) == len(ahead) == 7
    for (x0, y0), (x1, y1) in zip(direct, ahead, strict=True):
        np.testing.assert_array_equal(x0 * 2, x1)
        np.testing.assert_array_equal(y0, y1)
    assert set(samples.threads[:7]) == {"MainThread"}
    assert set(samples.threads[7:]) == {"hvdkit-prefetch"}


def test_prefetch_raises_at_the_failing_batch_and_stops_when_left_early() -> None:
    got = []
    with pytest.raises(UserError, match="batch failed"):
        for batch in prefetched(Recorded(50, fail_at=3), _plan(50, 5), depth=2):
            got.append(batch)
    assert len(got) == 3
    before = threading.active_count()
    stream = prefetched(Recorded(1000), _plan(1000, 5), depth=2)
    next(stream)
    assert threading.active_count() == before + 1
    stream.close()  # what leaving a for loop early does
    assert threading.active_count() == before


class Decoded:
    """A map-style data set whose samples say which process decoded them."""

    num_classes = 5

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int):
        time.sleep(0.001)  # decoding
        return np.array([i, os.getpid()], dtype=np.float64), i % 5


def test_worker_processes_decode_the_same_batches() -> None:
    config = recipe_from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
                               "optimizer": {"name": "sgd"}}).data
    plain = to_source(Decoded(), config)
    pooled = to_source(Decoded(), config)
    start_workers(pooled, 2)
    try:
        batches = []
        for data in (plain, pooled):
            loader = ShardedLoader(data.train, batch_size=6, rank=1, size=2, seed=4, prefetch=2)
            batches.append([b for e in range(2) for b in loader.batches(e)])
        assert len(batches[0]) == len(batches[1]) == 2 * (len(plain.train) // 12)
        pids = set()
        for (x0, y0), (x1, y1) in zip(*batches, strict=True):
            np.testing.assert_array_equal(x0[:, 0], x1[:, 0])
            np.testing.assert_array_equal(y0, y1)
            pids |= set(x1[:, 1].astype(int).tolist())
        assert os.getpid() not in pids and len(pids) == 2  # both workers, never this process
        assert set(x0[:, 1].astype(int).tolist()) == {os.getpid()}
    finally:
        pooled.close()


RSS_SCRIPT = """
import sys, numpy as np
from hvdkit.data.memory import open_npy, peak_rss_mib
path, how = sys.argv[1], sys.argv[2]
before = peak_rss_mib()
x = np.load(path, mmap_mode="r") if how == "mapped" else open_npy(path)
order = np.random.default_rng(0).permutation(len(x))
for s in range(0, len(x), 64):  # the loader's pattern: shuffled, each batch sorted
    idx = np.sort(order[s:s + 64])
    (x[idx] if how == "mapped" else x.gather(idx)).sum()
print(peak_rss_mib() - before)
"""


def test_reading_a_file_batch_by_batch_does_not_make_it_resident(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    with open(path, "wb") as f:  # 192 MiB, written without mapping it here
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (16384, 12288)})
        for _ in range(192):
            f.write(b"\x01" * 2**20)
    grown = {}
    for how in ("mapped", "disk"):
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path), how], cwd=ROOT,
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        grown[how] = float(out.stdout)
    assert grown["mapped"] > 150, grown  # a memory map keeps what it touched resident
    assert grown["disk"] < 20, grown  # DiskArray holds a batch (768 KiB)


def test_unreadable_files_are_counted_once_over_the_ranks() -> None:
    """distinct_count on 3 simulated ranks (threads, an allreduce that sums their arrays):
    a file two ranks met (another epoch dealt it to another rank) counts once."""
    from hvdkit.runtime.world import World
    from hvdkit.training.inputmeter import distinct_count

    def on_ranks(found: list[list[str]]) -> list[int]:
        size = len(found)
        barrier, sent, got = threading.Barrier(size), [None] * size, [0] * size
        calls = [0] * size

        def allreduce(rank: int, values: np.ndarray, op: str, name: str) -> np.ndarray:
            assert op == "sum"
            calls[rank] += 1
            sent[rank] = values
            barrier.wait()
            total = np.sum(sent, axis=0)
            barrier.wait()
            return total

        def run(rank: int) -> None:
            got[rank] = distinct_count(found[rank], World(rank, size),
                                       lambda v, op, name: allreduce(rank, v, op, name))

        threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(set(got)) == 1 and len(set(calls)) == 1  # every rank: the same collectives
        return got

    split = ["train/a/1.jpg", "train/b/2.png", "val/a/3.jpg"]
    assert on_ranks([split[:2], [split[0], split[2]], []]) == [3, 3, 3]  # a sum would say 4
    assert on_ranks([["x.jpg"], ["x.jpg"]]) == [1, 1]
    assert on_ranks([[], [], []]) == [0, 0, 0]
