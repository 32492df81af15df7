"""Running inside a job: every failure names its rank and ends the process non-zero.

horovodrun and mpirun then stop the other ranks, so a crash never leaves a job hanging, and
the launcher (hvdkit.launch.job.run_job) reads the `hvdkit: rank N failed` line to name it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from hvdkit.errors import UserError
from hvdkit.runtime import heartbeat

RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def rank_from_env() -> int:
    """This process's rank as its launcher set it (0 outside a job)."""
    for name in RANK_VARIABLES:
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
    return any(name in os.environ for name in RANK_VARIABLES)


def run_worker(main: Callable[[], int | None]) -> int:
    """Call `main`; a UserError exits 2, any other exception 1, each naming this rank. In a job
    started by `hvdkit train`, the rank's heartbeat (hvdkit.launch.monitor) runs meanwhile and its
    last beat says how the rank ended; a KeyboardInterrupt (a second Ctrl-C) exits 130."""
    rank = rank_from_env()
    heartbeat.start_heartbeat(rank)
    code, kind = 1, heartbeat.FAILED
    try:
        code = main() or 0
        kind = {0: heartbeat.OK, 130: heartbeat.INTERRUPTED, 143: heartbeat.INTERRUPTED}.get(
            code, heartbeat.ERROR)
    except UserError as exc:
        heartbeat.finish_heartbeat(2, heartbeat.ERROR, str(exc))  # before the others react
        print(f"hvdkit: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        code, kind = 2, heartbeat.ERROR
    except KeyboardInterrupt:
        print(f"hvdkit: rank {rank} interrupted: stopped at once, without a checkpoint",
              file=sys.stderr, flush=True)
        code, kind = 130, heartbeat.INTERRUPTED
    except BaseException as exc:
        if type(exc).__name__ == "HorovodInternalError":  # a consequence: a peer is gone
            heartbeat.finish_heartbeat(1, heartbeat.CONSEQUENCE)
            print(f"hvdkit: rank {rank} stopped: a collective failed because another rank "
                  f"is gone ({str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                  file=sys.stderr, flush=True)
        else:
            heartbeat.finish_heartbeat(1, heartbeat.FAILED)
            print(f"hvdkit: rank {rank} failed:\n{traceback.format_exc()}", file=sys.stderr,
                  flush=True)
    finally:
        heartbeat.finish_heartbeat(code, kind)  # a no-op when already finished above
    return code
