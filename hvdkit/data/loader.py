"""Each rank's share of every epoch: one seeded shuffle, the same on all ranks, cut in turn.

Step s of an epoch takes the global batch `order[s*B:(s+1)*B]` (B = per-rank batch x ranks),
and rank r takes its r-th contiguous slice, sorted (a file on disk is then read in
order). So the ranks' batches at a step are disjoint, and together they are exactly the
samples one process would take with batch size B: that is what makes 2-rank training equal
single-process training, and a position counted in global samples valid at any number of
ranks (resume, elastic). Batches are prepared ahead in a thread (hvdkit.data.prefetch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from hvdkit.data.prefetch import Stage, prefetched
from hvdkit.data.samples import Samples


class ShardedLoader:
    even = True
    """Every rank gets the same number of batches (a subclass that breaks this sets False:
    the trainer then ends each epoch with `hvd.join`)."""

    def __init__(
        self,
        samples: Samples,
        *,
        batch_size: int,
        rank: int = 0,
        size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
        prefetch: int = 0,
    ) -> None:
        self.samples = samples
        self.n = len(samples)
        self.batch_size, self.rank, self.size = batch_size, rank, size
        self.seed, self.drop_last, self.prefetch = seed, drop_last, prefetch
        self.global_batch = batch_size * size

    @property
    def steps_per_epoch(self) -> int:
        return self.steps_left(0)

    def order(self, epoch: int) -> np.ndarray:
        """The global sample order of an epoch, identical on every rank: a seeded shuffle,
        or the samples' own (`samples.epoch_order(seed, epoch)`: shards, hvdkit.data.images)."""
        own = getattr(self.samples, "epoch_order", None)
        order = own(self.seed, epoch) if own is not None else None
        if order is not None:
            return order
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def step_indices(self, order: np.ndarray, step: int) -> np.ndarray:
        """This rank's sample indices (sorted) at one step of the epoch with the given order."""
        start = step * self.global_batch
        chunk = order[start : start + self.global_batch]
        if len(chunk) == self.global_batch:
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        else:
            mine = np.array_split(chunk, self.size)[self.rank]  # the incomplete last batch
        return np.sort(mine)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        parts = [self.step_indices(order, s) for s in range(self.steps_per_epoch)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def index_batches(self, epoch: int, start_step: int = 0,
                      start_sample: int = 0) -> Iterator[np.ndarray]:
        """This rank's index arrays of an epoch (see `batches`)."""
        order = self.order(epoch)[start_sample:]
        for step in range(start_step, self.steps_left(start_sample)):
            yield self.step_indices(order, step)

    def batches(self, epoch: int, start_step: int = 0, start_sample: int = 0,
                stage: Stage | None = None) -> Iterator[Any]:
        """Yield this rank's (x, y) batches of an epoch, from `start_step` on, prepared
        `prefetch` batches ahead; `stage(x, y)` (an adapter's device copy) runs there too.

        `start_sample` counts global samples already taken in this epoch (a resumed or
        elastic run's position, valid at any number of ranks): batching restarts there.
        """
        set_epoch = getattr(self.samples, "set_epoch", None)
        if set_epoch is not None:  # what the augmentation draws from (hvdkit.data.images)
            set_epoch(epoch)
        plan = self.index_batches(epoch, start_step, start_sample)
        yield from prefetched(self.samples, plan, self.prefetch, stage)

    def steps_left(self, start_sample: int = 0) -> int:
        """Steps in the rest of an epoch that starts at global sample `start_sample`."""
        full, rest = divmod(max(self.n - start_sample, 0), self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def step_samples(self, start_sample: int) -> int:
        """Global samples the step starting at `start_sample` takes (all ranks together)."""
        return min(self.global_batch, self.n - start_sample)


def eval_shard(n: int, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous share of an n-sample evaluation set (shares differ by at most 1)."""
    return np.array_split(np.arange(n), size)[rank]


def eval_batches(samples: Samples, rank: int, size: int, batch_size: int, prefetch: int = 0,
                 stage: Stage | None = None) -> Iterator[Any]:
    """This rank's share of the evaluation set in batches, prepared ahead like training's."""
    mine = eval_shard(len(samples), rank, size)
    plan = (mine[s : s + batch_size] for s in range(0, len(mine), batch_size))
    yield from prefetched(samples, plan, prefetch, stage)
