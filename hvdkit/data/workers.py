"""Worker processes that decode batches (`data.workers: N`): a map-style data set's samples, or
image files (hvdkit.data.images).

For decode-heavy data (images stored compressed, augmentation in `__getitem__`): each worker
builds whole batches while the step runs. The workers are forked when the loader starts,
before the prefetch thread exists, so they inherit the data as it is (no pickling of it) and
never touch Horovod or a framework. A batch whose shape is known ahead (images) is written by
the worker straight into a block of shared memory the pool lends it, and copied out once
here: through the pool's pipes, pickled, a 64x224x224x3 batch cost more than decoding it
(70 ms, 1.1 ms an image, on a loaded 2-core machine). Other batches (a map-style data set's)
come back pickled through the pipes. One pool serves every split of a source (its decoders by
name), and it counts the images its workers decoded and the seconds they spent, which the
trainer reports (images/s per worker).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.pool import AsyncResult
from typing import Any

import numpy as np

from hvdkit.data.samples import DataSource, MapSamples, decode

_WORKER: dict[str, Any] = {}


def _init(decoders: dict[str, Callable[..., Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the pool
    _WORKER["decoders"] = decoders


def _run(key: str, args: tuple, slot: tuple | None) -> tuple[Any, float]:
    started = time.perf_counter()
    if slot is None:
        out = _WORKER["decoders"][key](*args)
    else:
        name, shape, dtype = slot
        blocks = _WORKER.setdefault("blocks", {})
        if name not in blocks:  # attached once; the pool reuses its blocks
            blocks[name] = shared_memory.SharedMemory(name=name)
        view = np.ndarray(shape, dtype=dtype, buffer=blocks[name].buf)
        out = _WORKER["decoders"][key](*args, out=view)
        del view
    return out, time.perf_counter() - started


class DecodePool:
    """`workers` forked processes running named decoders: `submit(key, *args)` starts
    `decoders[key](*args)` (which returns a tuple whose second item is the batch's labels)."""

    def __init__(self, decoders: dict[str, Callable[..., Any]], workers: int) -> None:
        self.workers = workers
        self._images, self._seconds = 0, 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._free: list[shared_memory.SharedMemory] = []  # blocks lent out and returned
        self._blocks: list[shared_memory.SharedMemory] = []
        # The workers must share this process's tracker of shared memory: one of their own
        # would unlink the pool's blocks when they end.
        resource_tracker.ensure_running()
        context = multiprocessing.get_context("fork")
        self._pool = context.Pool(workers, initializer=_init, initargs=(decoders,))

    def submit(self, key: str, *args: Any, out: tuple | None = None) -> Decoding:
        """Start `decoders[key](*args)`; with `out` = (shape, dtype), the decoder gets
        `out=`, an array of that shape in shared memory, to fill, and returns None in its
        place (the batch comes back through the block, not the pipe)."""
        block = None
        if out is not None:
            shape, dtype = out
            block = self._lend(int(np.prod(shape)) * np.dtype(dtype).itemsize)
            out = (block.name, tuple(shape), np.dtype(dtype).str) if block else None
        return Decoding(self, self._pool.apply_async(_run, (key, args, out)), block, out)

    def _lend(self, size: int) -> shared_memory.SharedMemory | None:
        """A free block of at least `size` bytes, or a new one; None where /dev/shm lacks the
        room (a container's default is 64 MB: the batch then goes through the pipe)."""
        with self._lock:
            for i, block in enumerate(self._free):
                if block.size >= size:
                    return self._free.pop(i)
            if _shm_free() < 2 * size:
                return None
            block = shared_memory.SharedMemory(create=True, size=max(size, 1))
            self._blocks.append(block)
            return block

    def give_back(self, block: shared_memory.SharedMemory) -> None:
        with self._lock:
            self._free.append(block)

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
            for block in self._blocks:
                block.close()
                block.unlink()


def _shm_free() -> int:
    """Bytes free in /dev/shm (where shared memory blocks live), or 0 where it cannot be read."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


class Decoding:
    """A batch being decoded; `get()` waits for it, counts it and, where it came through
    shared memory, copies it out and gives the block back."""

    def __init__(self, pool: DecodePool, result: AsyncResult,
                 block: shared_memory.SharedMemory | None = None, out: tuple | None = None
                 ) -> None:
        self.pool, self.result, self.block, self.out = pool, result, block, out

    def get(self) -> Any:
        try:
            out, seconds = self.result.get()
            if self.block is not None:
                _, shape, dtype = self.out  # type: ignore[misc]
                view = np.ndarray(shape, dtype=dtype, buffer=self.block.buf)
                out = (view.copy(), *out[1:])
                del view
        finally:
            if self.block is not None:
                self.pool.give_back(self.block)
                self.block = None
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
