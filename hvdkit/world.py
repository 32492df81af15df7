"""Who this process is in the job: rank, size, local rank, and how many threads it may use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    """The job's layout. `data_rank`/`data_size` say which shard of the data this rank reads:
    the rank itself in pure data parallelism; the replica's index when a model is split into
    pipeline stages (all stages of one replica read the same batches)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    data_rank: int = -1
    data_size: int = -1

    def __post_init__(self) -> None:
        if self.data_rank < 0:
            object.__setattr__(self, "data_rank", self.rank)
        if self.data_size < 0:
            object.__setattr__(self, "data_size", self.size)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_horovod(cls, hvd: Any) -> World:
        """Read the layout from an initialised `horovod.torch` or `horovod.tensorflow` module."""
        return cls(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())


def cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(local_size: int) -> int:
    """Intra-op threads per rank: the host's cores shared out, since oversubscription is slow."""
    return max(1, cores() // max(1, local_size))
