"""Batches prepared ahead in a background thread, so the step never waits for its input.

`prefetched(samples, plan, depth, stage)` yields `stage(*samples.take(idx))` for each index
array of `plan`, in order, with up to `depth` batches ready ahead. The thread gathers (the
indices are sorted, so a file on disk is read in order), converts, and runs `stage`: an
adapter's hook that pins the batch and starts its copy to the device. A data set decoded by
worker processes (`samples.pool`) keeps `workers + depth` batches in flight. An exception in the
thread is raised in the consumer at the batch it concerns; leaving the loop early stops it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from hvdkit.data.samples import Samples

Stage = Callable[[np.ndarray, np.ndarray], Any]
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(samples: Samples, plan: Iterable[np.ndarray], depth: int,
               stage: Stage | None = None) -> Iterator[Any]:
    """Each batch of `plan` as `stage(x, y)` (or `(x, y)`), `depth` ahead in a thread."""
    finish = stage or (lambda x, y: (x, y))
    pool = getattr(samples, "pool", None)
    if depth == 0 and pool is None:
        for idx in plan:
            yield finish(*samples.take(idx))
        return
    prefetcher = Prefetcher(samples, plan, max(depth, 1), finish, pool)
    try:
        yield from prefetcher
    finally:
        prefetcher.close()


class Prefetcher:
    """The background thread and its bounded queue (use through `prefetched`)."""

    def __init__(self, samples: Samples, plan: Iterable[np.ndarray], depth: int,
                 finish: Stage, pool: Any = None) -> None:
        self.samples, self.plan, self.finish, self.pool = samples, plan, finish, pool
        self.ahead = depth + (pool.workers if pool is not None else 0)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvdkit-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            pending: deque = deque()
            for idx in self.plan:
                if self._stop.is_set():
                    return
                if self.pool is None:
                    self._put(self.finish(*self.samples.take(idx)))
                    continue
                pending.append(self.samples.submit(idx))  # type: ignore[attr-defined]
                if len(pending) >= self.ahead:
                    self._put(self.finish(*pending.popleft().get()))
            while pending and not self._stop.is_set():
                self._put(self.finish(*pending.popleft().get()))
            self._put(_END)
        except BaseException as exc:  # raised again in the consumer
            self._put(_Failure(exc))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the thread (it finishes the batch in hand) and drop what it prepared."""
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()
