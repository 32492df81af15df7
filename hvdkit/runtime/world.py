"""Who this process is in the job: rank, size, local rank, and how many threads it may use."""

from __future__ import annotations

import os
import socket
import sys
import time
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
    communicator on one GPU). Where the launcher gave each rank its own GPUs (HVDKIT_OWN_GPUS=1,
    set by launch/slurm.sbatch under --gpus-per-task) and a rank sees fewer than the host's
    ranks, the GPUs it sees are its own: it takes the first."""
    if device == "cpu" or (device == "auto" and gpus == 0):
        return None
    if gpus == 0:
        raise UserError("train.device is gpu but this process sees no GPU; use auto or cpu")
    if local_size > gpus and os.environ.get("HVDKIT_OWN_GPUS") == "1":
        return 0
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


def ranks_on_machine(local_size: int) -> int:
    """Ranks sharing this machine: Horovod's local size, unless the launcher counted them
    itself (an elastic job whose hosts name this machine more than once; hvdkit.launch.machines)."""
    table = os.environ.get("HVDKIT_MACHINE_RANKS", "")
    host = os.environ.get("HOROVOD_HOSTNAME")
    counts = dict(item.rsplit("=", 1) for item in table.split(",") if "=" in item)
    if host in counts and counts[host].isdigit():
        return max(local_size, int(counts[host]))
    return local_size


def default_threads(local_size: int) -> int:
    """Intra-op threads per rank: the machine's cores shared out among the ranks on it, since
    oversubscription is slow."""
    return max(1, cores() // max(1, ranks_on_machine(local_size)))


OVERSUBSCRIBED_WARNED = "HVDKIT_OVERSUBSCRIBED_WARNED"
"""Set (to 1) where more ranks than cores were warned of (a launcher, a rank): the ranks it
starts, and later trainers of the process, say it no more."""


def oversubscribed_warning(ranks: int, host_cores: int, host: str = "this host") -> str | None:
    """The one line for `ranks` ranks on `host_cores` cores, or None where they fit. Not an
    error: oversubscription is legal (a test of many ranks on a laptop), only slow."""
    if ranks <= host_cores:
        return None
    return (f"hvdkit: warning: {ranks} ranks on {host}'s {host_cores} cores: they take turns "
            f"on the cores and every step waits for the slowest; launch at most {host_cores} "
            f"ranks per host (-np), or spread them over hosts (--hosts)")


def warn_oversubscribed_host(local_rank: int, local_size: int) -> None:
    """In a rank: the first rank of a host that holds more ranks than it has cores says so,
    once a process, unless the launcher did. The host's cores (`os.cpu_count`), not this
    rank's share: a launcher that binds each rank to its cores leaves a rank seeing its own."""
    if local_rank != 0 or os.environ.get(OVERSUBSCRIBED_WARNED) == "1":
        return
    message = oversubscribed_warning(ranks_on_machine(local_size), os.cpu_count() or 1,
                                     f"host {socket.gethostname()}")
    if message:
        print(message, file=sys.stderr, flush=True)
        os.environ[OVERSUBSCRIBED_WARNED] = "1"


JOB_STARTED = "HVDKIT_JOB_STARTED"


def job_seconds_so_far() -> float:
    """Seconds since `hvdkit train` started the job (its launcher sets HVDKIT_JOB_STARTED, the
    epoch time, for every rank); 0 where it did not (another launcher)."""
    try:
        return max(0.0, time.time() - float(os.environ[JOB_STARTED]))
    except (KeyError, ValueError):
        return 0.0
