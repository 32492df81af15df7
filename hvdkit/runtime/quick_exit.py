"""Ending a process that trained, without Python's slow teardown.

After training, the interpreter's own shutdown (freeing every module's objects, the
frameworks' thread pools and static destructors) takes seconds under load, on every rank,
before mpirun can return (README, "Launch defaults"). `quick_exit` does what that shutdown
must do here — let the threads still working finish, shut Horovod down, finalize MPI, flush
the output — and then ends the process at once (`os._exit`).

It is bounded: hvdkit's own threads (named `hvdkit-*`; each is stopped by its owner before
this) get up to `OWN_WAIT_S`, every other non-daemon thread `FOREIGN_WAIT_S` in all. Those
others are mostly pools a framework started and leaves idle for the interpreter's exit to shut
down (torch.compile's inductor compile workers, a `ThreadPoolExecutor` whose threads wait for
work that never comes): joined without a limit, they kept a finished rank alive for good.
Called only by the `hvdkit` command itself (`hvdkit.cli.main` with no argv) and the ranks'
entry point (`hvdkit.worker`), after a successful `train`; programs that call `main([...])`
keep their process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

OWN_PREFIX = "hvdkit-"
"""The name of every thread hvdkit starts."""
OWN_WAIT_S = 10.0
"""The longest hvdkit's own threads may take to end (they were asked to already)."""
FOREIGN_WAIT_S = 0.5
"""The longest every other non-daemon thread may take, together, to end."""

log = logging.getLogger(__name__)


def quick_exit(code: int) -> None:
    """Finish this rank's work in an orderly way, then end the process with `code`."""
    left = finish_threads()
    if left:
        log.debug("exiting with threads still running: %s", ", ".join(t.name for t in left))
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


def finish_threads(own_wait_s: float = OWN_WAIT_S,
                   foreign_wait_s: float = FOREIGN_WAIT_S) -> list[threading.Thread]:
    """Join the non-daemon threads other than this one: hvdkit's own first, for up to
    `own_wait_s` (one left then is a bug, and said), then the others, for up to
    `foreign_wait_s` in all. Returns the threads still running."""
    current = threading.current_thread()
    threads = [t for t in threading.enumerate() if t is not current and not t.daemon]
    own = [t for t in threads if t.name.startswith(OWN_PREFIX)]
    _join(own, own_wait_s)
    for thread in own:
        if thread.is_alive():
            print(f"hvdkit: warning: thread {thread.name} did not end within {own_wait_s:g}s; "
                  "exiting without it", file=sys.stderr, flush=True)
    _join([t for t in threads if t not in own], foreign_wait_s)
    return [t for t in threads if t.is_alive()]


def _join(threads: list[threading.Thread], seconds: float) -> None:
    """Join `threads` one after the other until `seconds` have passed in all."""
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
