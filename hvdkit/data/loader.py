"""Each rank's share of every epoch: one seeded shuffle, the same on all ranks, cut in turn.

Step s of an epoch takes the global batch `order[s*B:(s+1)*B]` (B = per-rank batch x ranks),
and rank r takes its r-th contiguous slice. So the ranks' batches at a step are disjoint, and
together they are exactly the batch one process would take with batch size B: that is what
makes 2-rank training equal single-process training.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class ShardedLoader:
    even = True
    """Every rank gets the same number of batches (a subclass that breaks this sets False:
    the trainer then ends each epoch with `hvd.join`)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        rank: int = 0,
        size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        self.x, self.y = x, y
        self.batch_size, self.rank, self.size = batch_size, rank, size
        self.seed, self.drop_last = seed, drop_last
        self.global_batch = batch_size * size

    @property
    def steps_per_epoch(self) -> int:
        full, rest = divmod(len(self.x), self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self, epoch: int) -> np.ndarray:
        """The global sample order of an epoch, identical on every rank."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def step_indices(self, order: np.ndarray, step: int) -> np.ndarray:
        """This rank's sample indices at one step of the epoch with the given order."""
        start = step * self.global_batch
        chunk = order[start : start + self.global_batch]
        if len(chunk) == self.global_batch:
            return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return np.array_split(chunk, self.size)[self.rank]  # the incomplete last batch

    def epoch_indices(self, epoch: int) -> np.ndarray:
        order = self.order(epoch)
        parts = [self.step_indices(order, s) for s in range(self.steps_per_epoch)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def batches(self, epoch: int, start_step: int = 0,
                start_sample: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield this rank's (x, y) batches of an epoch, from `start_step` on.

        `start_sample` counts global samples already taken in this epoch (a resumed or
        elastic run's position, valid at any number of ranks): batching restarts there.
        """
        order = self.order(epoch)[start_sample:]
        for step in range(start_step, self.steps_left(start_sample)):
            idx = self.step_indices(order, step)
            yield self.x[idx], self.y[idx]

    def steps_left(self, start_sample: int = 0) -> int:
        """Steps in the rest of an epoch that starts at global sample `start_sample`."""
        full, rest = divmod(max(len(self.x) - start_sample, 0), self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def step_samples(self, start_sample: int) -> int:
        """Global samples the step starting at `start_sample` takes (all ranks together)."""
        return min(self.global_batch, len(self.x) - start_sample)


def eval_shard(n: int, rank: int, size: int) -> np.ndarray:
    """This rank's contiguous share of an n-sample evaluation set (shares differ by at most 1)."""
    return np.array_split(np.arange(n), size)[rank]
