"""A parameter server over mpi4py: the baseline ring-allreduce is weighed against.

The replicas' first rank is the server (rank 0 in pure data parallelism; replica 0 of each
stage in a hybrid pipeline). Every replica sends its gradients to it (`Reduce`, or `Gather` of
fp16 halves when compression is on, summed in float32 on the root); the root alone runs the
optimizer and sends the parameters back (`Bcast`). The arithmetic is that of an averaged
allreduce followed by the same update on every rank, so a run trains to the same parameters —
only the traffic differs:
the root receives and sends (n−1) full copies per step where a ring moves 2(n−1)/n per rank.

It moves flat float32 numpy buffers through the adapter's numpy gradient hooks; it needs an MPI
launch (hvdkit.layout checks). Run with `--set parallel.sync=ps`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hvdkit.parallel.exchange import ExchangePlan, GradientExchange

ROOT = 0


class ParameterServer:
    """Gradient push to the communicator's rank 0 and parameter pull from it; counts its
    seconds and bytes."""

    def __init__(self, comm: Any, compression: str = "none") -> None:
        from mpi4py import MPI

        self.comm = comm
        self.MPI = MPI
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.fp16 = compression == "fp16"
        self.seconds = 0.0
        self.bytes_sent = 0

    @property
    def is_root(self) -> bool:
        return self.rank == ROOT

    def push(self, grads: np.ndarray, average: bool = True) -> np.ndarray | None:
        """Combine the ranks' flat gradients on the root; returns them there, None elsewhere."""
        started = time.perf_counter()
        grads = np.ascontiguousarray(grads, dtype=np.float32)
        if self.fp16:
            half = grads.astype(np.float16)  # sent as raw 16-bit words: MPI has no float16
            gathered = np.empty((self.size, half.size), np.uint16) if self.is_root else None
            self.comm.Gather(half.view(np.uint16), gathered, root=ROOT)
            total = gathered.view(np.float16).astype(np.float32).sum(0) if self.is_root \
                else None
            self.bytes_sent += half.nbytes
        else:
            total = np.empty_like(grads) if self.is_root else None
            self.comm.Reduce(grads, total, op=self.MPI.SUM, root=ROOT)
            self.bytes_sent += grads.nbytes
        if total is not None and average:
            total /= self.size
        self.seconds += time.perf_counter() - started
        return total

    def pull(self, params: np.ndarray) -> np.ndarray:
        """Broadcast the root's flat parameters into `params` (float32, in place) on every rank."""
        started = time.perf_counter()
        self.comm.Bcast(params, root=ROOT)
        if self.is_root:
            self.bytes_sent += params.nbytes * (self.size - 1)
        self.seconds += time.perf_counter() - started
        return params


class ParameterServerExchange(GradientExchange):
    """The parameter server as a gradient exchange, over this rank's replicas; the same object
    for every framework: it moves numpy through the adapter's gradient and parameter hooks."""

    name = "ps"
    in_step = False

    def __init__(self, plan: ExchangePlan) -> None:
        super().__init__(plan)
        from mpi4py import MPI

        # The replicas of this rank's stage, ordered by replica: the first is the server.
        comm = MPI.COMM_WORLD.Split(plan.stage, plan.replica)
        self.server = ParameterServer(comm, plan.compression)
        self.average = plan.op == "average"

    def step(self) -> None:
        adapter, server = self.adapter, self.server
        started = time.perf_counter()
        grads = adapter.gradients_as_numpy()
        total = server.push(flatten(grads), average=self.average)
        if total is not None:
            adapter.set_gradients(unflatten(total, grads))
            adapter.optimizer_step()
        params = adapter.parameters_as_numpy()
        adapter.assign_parameters(unflatten(server.pull(flatten(params)), params))
        self.calls += 1
        self.bytes_per_step = server.bytes_sent / self.calls
        self.seconds += time.perf_counter() - started

    def comm_seconds(self) -> float:
        """Seconds in the server's Reduce/Gather and Bcast."""
        return self.server.seconds


def flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float32, copy=False) for a in arrays])


def unflatten(flat: np.ndarray, like: list[Any]) -> list[np.ndarray]:
    """Split `flat` into arrays shaped as `like` (anything with `.shape`)."""
    out, start = [], 0
    for item in like:
        shape = tuple(item.shape)
        n = int(np.prod(shape))
        out.append(flat[start : start + n].reshape(shape))
        start += n
    return out
