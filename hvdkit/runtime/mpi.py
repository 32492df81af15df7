"""MPI started on the main thread, for ranks that call mpi4py beside Horovod.

`hvd.init()` starts MPI on Horovod's background thread when nothing has started it yet; a rank
that then calls mpi4py from its main thread while that thread runs Horovod's collectives
crashed (segfault) in about 1 job in 30 here (2 of 60 2-rank jobs timing mpi4py's Allreduce;
0 of 200 with MPI started first by mpi4py). Started here first, MPI belongs to this thread and
to mpi4py, which finalizes it at exit (or `quick_exit` does); Horovod takes a copy of its world.
"""

from __future__ import annotations

from typing import Any


def start_mpi_here() -> Any:
    """Start MPI on the calling thread with mpi4py (before `hvd.init`); return `mpi4py.MPI`."""
    from mpi4py import MPI

    return MPI
