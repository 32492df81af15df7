"""Ending a process that trained, without Python's slow teardown.

After training, the interpreter's own shutdown (freeing every module's objects, the
frameworks' thread pools and static destructors) takes seconds under load, on every rank,
before mpirun can return (README, "Launch defaults"). `quick_exit` does what that shutdown
must do here — wait for the program's own (non-daemon) threads, shut Horovod down,
finalize MPI, flush the output — and then ends the process at once (`os._exit`).
Called only by the `hvdkit` command itself (`hvdkit.cli.main` with no argv), after a
successful `train`; programs that call `main([...])` keep their process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading


def quick_exit(code: int) -> None:
    """Finish this rank's work in an orderly way, then end the process with `code`."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    for name in ("horovod.torch", "horovod.tensorflow"):
        hvd = sys.modules.get(name)
        if hvd is not None and hvd.is_initialized():
            hvd.shutdown()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
