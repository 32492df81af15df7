"""Running inside a job: every failure names its rank and ends the process non-zero.

horovodrun and mpirun then stop the other ranks, so a crash never leaves a job hanging, and
the launcher (hvdkit.launcher.run_job) reads the `hvdkit: rank N failed` line to name it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from hvdkit.errors import UserError

_RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def rank_from_env() -> int:
    """This process's rank as its launcher set it (0 outside a job)."""
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def size_from_env() -> int:
    """The job's number of ranks as its launcher set it (1 outside a job)."""
    for name in ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        if name in os.environ:
            return int(os.environ[name])
    return 1


def controller_from_env() -> str:
    """`gloo` inside a horovodrun Gloo job, else `mpi` (mpirun, srun, horovodrun --mpi)."""
    return "gloo" if os.environ.get("HOROVOD_CONTROLLER") == "gloo" else "mpi"


def in_horovod_job() -> bool:
    """True inside a process started by horovodrun, mpirun or srun with PMI."""
    return any(name in os.environ for name in _RANK_VARIABLES)


def run_worker(main: Callable[[], int | None]) -> int:
    """Call `main`; a UserError exits 2, any other exception 1, each naming this rank."""
    rank = rank_from_env()
    try:
        return main() or 0
    except UserError as exc:
        print(f"hvdkit: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        return 2
    except BaseException as exc:
        if type(exc).__name__ == "HorovodInternalError":  # a consequence: a peer is gone
            print(f"hvdkit: rank {rank} stopped: a collective failed because another rank "
                  f"is gone ({str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                  file=sys.stderr, flush=True)
            return 1
        print(f"hvdkit: rank {rank} failed:\n{traceback.format_exc()}", file=sys.stderr,
              flush=True)
        return 1
