"""Worker processes that decode a map-style data set's batches (`data.workers: N`).

For decode-heavy data (images stored compressed, augmentation in `__getitem__`): each worker
builds whole batches (`[i] -> (x, y)` per sample, stacked and converted) while the step runs.
The workers are forked when the loader starts, before the prefetch thread exists, so they
inherit the data set as it is (no pickling of it) and never touch Horovod or a framework;
batches come back pickled through the pool's pipes.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.pool import AsyncResult
from typing import Any

import numpy as np

from hvdkit.data.samples import DataSource, MapSamples, decode

_WORKER: dict[str, Any] = {}


def _init(dataset: Any, num_classes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the pool
    _WORKER.update(dataset=dataset, num_classes=num_classes)


def _decode(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return decode(_WORKER["dataset"], positions, _WORKER["num_classes"])


class DecodePool:
    """`workers` forked processes decoding batches of one map-style data set."""

    def __init__(self, dataset: Any, num_classes: int, workers: int) -> None:
        self.workers = workers
        context = multiprocessing.get_context("fork")
        self._pool = context.Pool(workers, initializer=_init, initargs=(dataset, num_classes))

    def submit(self, positions: np.ndarray) -> AsyncResult:
        return self._pool.apply_async(_decode, (positions,))

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


def start_workers(data: DataSource, workers: int) -> None:
    """Give the map-style splits of `data` a pool of `workers` decoding processes (one pool
    per underlying data set); other sources are left as they are."""
    if workers < 1:
        return
    pools: dict[int, DecodePool] = {}
    for split in (data.train, data.test):
        if isinstance(split, MapSamples) and split.pool is None:
            key = id(split.dataset)
            if key not in pools:
                pools[key] = DecodePool(split.dataset, split.num_classes, workers)
            split.pool = pools[key]
