"""How well the input path keeps up: the share of the training loop's time spent waiting for
the next batch, and how fast the decoders (data.workers processes, or the prefetch thread)
decode images.

Each rank measures its own loop: the seconds spent in `next()` on the batch stream, the wall
seconds of the loop, and what its decoders did (images, busy seconds). Every metrics flush
sends one row of these sums through the flush's allreduce (hvdkit.training.metrics), so the
figures cover all ranks: `data_wait_share` = waits / loop time, and images/s per worker =
images / decoder busy seconds (the rate of one worker while it works). A wait share well above zero
with workers busy nearly all the time means more `data.workers` would speed training up.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

WIDTH = 4
"""Columns a rank sends: wait seconds, loop seconds, images decoded, decoder seconds."""


class InputMeter:
    """One rank's input measurements (see the module doc); `samples` is the training split."""

    def __init__(self, samples: Any) -> None:
        self._stats = getattr(samples, "decode_stats", None)
        self.decoders = self._stats()[2] if self._stats is not None else 0
        self.totals = np.zeros(WIDTH)  # over all ranks, after the warm-up steps
        self.everything = np.zeros(WIDTH)  # over all ranks, every step
        self.mark()

    def _decoded(self) -> tuple[int, float]:
        if self._stats is None:
            return 0, 0.0
        images, seconds, _ = self._stats()
        return images, seconds

    def mark(self) -> None:
        """Start a new interval now (each epoch starts one: evaluation stays out)."""
        self._waited = 0.0
        self._since = time.perf_counter()
        self._decoded_then = self._decoded()

    def timed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """`batches`, adding the time each `next()` blocked to the waits."""
        stream = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                item = next(stream)
            except StopIteration:
                return
            self._waited += time.perf_counter() - started
            yield item

    def interval(self) -> np.ndarray:
        """This rank's row since the last mark (and a new mark)."""
        images, seconds = self._decoded()
        row = np.array([self._waited, time.perf_counter() - self._since,
                        images - self._decoded_then[0], seconds - self._decoded_then[1]])
        self.mark()
        return row

    def add(self, total: np.ndarray, after_warmup: bool) -> dict[str, float]:
        """Count an interval's row summed over the ranks; its figures for the step logs."""
        self.everything += total
        if after_warmup:
            self.totals += total
        return self.figures(total)

    def figures(self, row: np.ndarray) -> dict[str, float]:
        waited, loop, images, seconds = (float(v) for v in row)
        out: dict[str, float] = {}
        if loop > 0:
            out["data_wait_share"] = min(waited / loop, 1.0)
        if images > 0 and seconds > 0:
            out["decoded_per_sec_per_worker"] = images / seconds
            if loop > 0 and self.decoders:
                out["decoder_busy_share"] = min(seconds / (loop * self.decoders), 1.0)
        return out

    def summary(self) -> dict[str, Any]:
        """The run's figures: after the warm-up steps, or over every step of a run too short
        to have any after them."""
        row = self.totals if self.totals[1] > 0 else self.everything
        return {"decoders_per_rank": self.decoders, **self.figures(row),
                "images_decoded": int(row[2])}


def input_summary(trainer: Any) -> dict[str, Any]:
    """summary.json's `input`: the run's figures (the trainer's meter) with the unreadable
    image files met, training and test, each counted once over all ranks (image sources)."""
    summary = {"workers": trainer.recipe.data.workers, **trainer.input_meter.summary()}
    unreadable = getattr(trainer.data.train, "unreadable", None)  # shared with the test split
    if unreadable is not None:
        summary["unreadable_images"] = distinct_count(
            list(unreadable.found), trainer.world, trainer.adapter.allreduce)
    return summary


def distinct_count(names: list[str], world: Any, allreduce: Callable[..., np.ndarray]) -> int:
    """How many different `names` all ranks together hold, each counted once.

    A sum over ranks would count a file twice: the loader deals each epoch's shuffle out
    afresh, so a training file lands on another rank in another epoch, and a pipeline's
    stages all read their replica's batches. So every rank sends its names' digests
    (`digest`) in its own row of a (ranks, most any rank holds) table, summed by one
    allreduce (after one for the counts; none more when no rank holds any), and the
    distinct non-zero digests are counted."""
    counts = np.zeros(world.size)
    counts[world.rank] = len(names)
    most = int(allreduce(counts, op="sum", name="hvdkit.unreadable").max())
    if most == 0:
        return 0
    table = np.zeros((world.size, most))
    table[world.rank, : len(names)] = [digest(n) for n in names]
    table = allreduce(table, op="sum", name="hvdkit.unreadable_names")
    return len(np.unique(table[table > 0]))


def digest(name: str) -> float:
    """A name as a number in [1, 2**52]: exact in float64, which an allreduce's sum of one
    non-zero and zeros leaves unchanged (two names alike by chance: about 1 in 2**52)."""
    value = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    return float((value >> 12) + 1)
