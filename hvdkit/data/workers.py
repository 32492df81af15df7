"""Worker processes that decode batches (`data.workers: N`): a map-style data set's samples, or
image files (hvdkit.data.images).

For decode-heavy data (images stored compressed, augmentation in `__getitem__`): each worker
builds whole batches while the step runs. The workers are forked when the loader starts,
before the prefetch thread exists, so they inherit the data as it is (no pickling of it) and
never touch Horovod or a framework; batches come back pickled through the pool's pipes. One
pool serves every split of a source (its decoders by name), and it counts the images its
workers decoded and the seconds they spent, which the trainer reports (images/s per worker).
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.pool import AsyncResult
from typing import Any

from hvdkit.data.samples import DataSource, MapSamples, decode

_WORKER: dict[str, Any] = {}


def _init(decoders: dict[str, Callable[..., Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the pool
    _WORKER["decoders"] = decoders


def _run(key: str, args: tuple) -> tuple[Any, float]:
    started = time.perf_counter()
    out = _WORKER["decoders"][key](*args)
    return out, time.perf_counter() - started


class DecodePool:
    """`workers` forked processes running named decoders: `submit(key, *args)` starts
    `decoders[key](*args)` (which returns a tuple whose second item is the batch's labels)."""

    def __init__(self, decoders: dict[str, Callable[..., Any]], workers: int) -> None:
        self.workers = workers
        self._images, self._seconds = 0, 0.0
        self._lock = threading.Lock()
        self._closed = False
        context = multiprocessing.get_context("fork")
        self._pool = context.Pool(workers, initializer=_init, initargs=(decoders,))

    def submit(self, key: str, *args: Any) -> Decoding:
        return Decoding(self, self._pool.apply_async(_run, (key, args)))

    def record(self, images: int, seconds: float) -> None:
        with self._lock:
            self._images += images
            self._seconds += seconds

    def stats(self) -> tuple[int, float]:
        """(images decoded, seconds the workers spent decoding them) so far."""
        with self._lock:
            return self._images, self._seconds

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.terminate()
            self._pool.join()


class Decoding:
    """A batch being decoded; `get()` waits for it and counts it."""

    def __init__(self, pool: DecodePool, result: AsyncResult) -> None:
        self.pool, self.result = pool, result

    def get(self) -> Any:
        out, seconds = self.result.get()
        self.pool.record(len(out[1]), seconds)
        return out


def start_workers(data: DataSource, workers: int) -> None:
    """Give the splits of `data` that can use one (map-style data, images) a pool of
    `workers` decoding processes, one pool for them all; other sources are left as they are."""
    if workers < 1:
        return
    decoders: dict[str, Callable[..., Any]] = {}
    splits = []
    for split in (data.train, data.test):
        if getattr(split, "pool", True) is not None:  # no pool to take, or one already
            continue
        if isinstance(split, MapSamples):
            decoders[split.key] = functools.partial(decode, split.dataset,
                                                    num_classes=split.num_classes)
        elif hasattr(split, "decode") and hasattr(split, "key"):
            decoders[split.key] = split.decode
        else:
            continue
        splits.append(split)
    if splits:
        pool = DecodePool(decoders, workers)
        for split in splits:
            split.pool = pool
