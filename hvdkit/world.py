"""Who this process is in the job: rank, size, local rank, and how many threads it may use."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hvdkit.errors import UserError


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


def pick_gpu(device: str, local_rank: int, local_size: int, gpus: int,
             shared_ok: bool) -> int | None:
    """The GPU this rank trains on, or None for the CPU. `device` is train.device: `auto` (this
    rank's GPU when the host has any), `gpu` (an error without one) or `cpu`. Rank i on a host
    takes GPU i; ranks may share a GPU only where `shared_ok` (NCCL refuses two ranks of one
    communicator on one GPU)."""
    if device == "cpu" or (device == "auto" and gpus == 0):
        return None
    if gpus == 0:
        raise UserError("train.device is gpu but this process sees no GPU; use auto or cpu")
    if local_size > gpus and not shared_ok:
        raise UserError(f"{local_size} ranks on this host but {gpus} GPU(s): NCCL needs a GPU "
                        "per rank; launch at most one rank per GPU (-np), or set train.device cpu")
    return local_rank % gpus


def cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(local_size: int) -> int:
    """Intra-op threads per rank: the host's cores shared out, since oversubscription is slow."""
    return max(1, cores() // max(1, local_size))
