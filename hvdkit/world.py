"""Who this process is in the job: rank, size, local rank, and how many threads it may use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Variables that the launchers hvdkit supports set in every worker they start.
_JOB_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_horovod(cls, hvd: Any) -> World:
        """Read the layout from an initialised `horovod.torch` or `horovod.tensorflow` module."""
        return cls(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())


def in_horovod_job() -> bool:
    """True inside a process started by horovodrun, mpirun or srun with PMI."""
    return any(name in os.environ for name in _JOB_VARIABLES)


def cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(local_size: int) -> int:
    """Intra-op threads per rank: the host's cores shared out, since oversubscription is slow."""
    return max(1, cores() // max(1, local_size))
