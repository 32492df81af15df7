"""Point-to-point between neighbouring pipeline stages: mpi4py `Isend`/`Irecv` on numpy buffers.

Horovod has only collectives, so activations (forward) and their gradients (backward) travel
over MPI directly, on a communicator holding one pipeline's stages (rank = stage). Buffers are
contiguous float32 arrays that the adapters wrap without a copy where the framework allows
(`torch.from_numpy`, `Tensor.numpy()`); shapes are known in advance (every stage computes
each boundary's feature shape from the model, and the batch size from its own data), so no
shape message precedes a tensor. Tags name the micro-batch, the boundary between model chunks
it crosses and the direction (hvdkit.parallel.schedules.message_tag): unique within a step.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

FORWARD, BACKWARD = 0, 1
SPIN_POLLS = 200  # polls before a waiting stage starts to sleep between them
SLEEP_SECONDS = 5e-5


class Neighbours:
    """Non-blocking sends and receives to the previous and next stage of one pipeline."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.request = MPI.Request
        self.comm = comm
        self.stage = comm.Get_rank()
        self.stages = comm.Get_size()
        self._sends: list[tuple[Any, np.ndarray]] = []  # requests and the buffers they read
        self.wait_seconds = 0.0
        self.bytes_sent = 0

    def send(self, array: np.ndarray, dest: int, tag: int) -> None:
        """Start sending `array`; it stays referenced until `finish_sends` completes it."""
        buffer = np.ascontiguousarray(array, dtype=np.float32)
        request = self.comm.Isend(buffer, dest=dest, tag=tag)
        self._sends.append((request, buffer))
        self.bytes_sent += buffer.nbytes

    def post_recv(self, shape: tuple[int, ...], source: int,
                  tag: int) -> tuple[Any, np.ndarray]:
        """Start receiving into a fresh buffer; `wait` on the returned pair before reading it."""
        buffer = np.empty(shape, dtype=np.float32)
        return self.comm.Irecv(buffer, source=source, tag=tag), buffer

    def wait(self, pending: tuple[Any, np.ndarray]) -> np.ndarray:
        request, buffer = pending
        started = time.perf_counter()
        idle_wait([request])
        self.wait_seconds += time.perf_counter() - started
        return buffer

    def progress(self) -> None:
        """Let MPI move outstanding sends along (large messages need the sender's calls)."""
        if self._sends:
            self.request.Testall([request for request, _ in self._sends])

    def finish_sends(self) -> None:
        """Complete every outstanding send (their buffers may then be freed)."""
        started = time.perf_counter()
        idle_wait([request for request, _ in self._sends])
        self._sends.clear()
        self.wait_seconds += time.perf_counter() - started


def idle_wait(requests: list[Any]) -> None:
    """Wait for MPI requests without holding the core: `Wait` busy-polls, which on a host with
    fewer free cores than ranks takes the core from a rank that is computing. Poll, then sleep."""
    from mpi4py import MPI

    spins = 0
    statuses = [MPI.Status() for _ in requests]
    try:
        while not MPI.Request.Testall(requests, statuses):
            spins += 1
            if spins > SPIN_POLLS:
                time.sleep(SLEEP_SECONDS)
    except MPI.Exception as exc:  # name the failed message's own error, not "in status"
        errors = {MPI.Get_error_string(s.Get_error()) for s in statuses if s.Get_error()}
        raise RuntimeError(f"a pipeline message failed: {'; '.join(sorted(errors)) or exc} "
                           f"(source {[s.Get_source() for s in statuses]}, "
                           f"tag {[s.Get_tag() for s in statuses]})") from exc
