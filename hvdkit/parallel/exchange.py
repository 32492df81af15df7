"""Gradient exchange: how the data-parallel replicas combine their gradients each step.

    apply_gradient_exchange(adapter, layout, rank)   # the last step of hvdkit.parallel

One exchange per job, chosen from `parallel.sync` and `parallel.compression`, for the replicas
of this rank: every rank in pure data parallelism, the ranks of this rank's stage in a hybrid
pipeline (a Horovod process set), whether or not the model is also placed over devices. After a
step's backward passes the adapter calls `exchange.step()`, which combines the gradients and
steps the optimizer. A framework's mechanics for an exchange are one hook on its adapter
(`ring_reducer`; the numpy gradient hooks for the parameter server).

    none    one replica: the optimizer steps on the local gradients
    ring    Horovod ring-allreduce (op average | sum | adasum; fp16 on the wire)
    ps      a parameter server on the replicas' first rank, over mpi4py (hvdkit.parallel.ps)
    zero1   reduce-scatter, the optimizer on this rank's shard, all-gather (hvdkit.parallel.zero)
    ring + powersgd   low-rank factors by allreduce, error feedback (hvdkit.parallel.powersgd)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvdkit.layout import ParallelLayout


class GradientExchange:
    """The replicas' gradients combined, then the optimizer's step; counts its cost."""

    name = "none"
    in_step = True
    """True where the exchange happens inside the adapter's `optimizer_step` (so a framework
    may compile it into its step); False where `step` moves the gradients itself."""

    collective_state = False
    """True where the optimizer's state is spread over the replicas, so that every rank takes
    part in `adapter.state()` (ZeRO-1 gathers its shards, PowerSGD every rank's errors)."""

    def __init__(self) -> None:
        self.adapter: Any = None
        self.seconds = 0.0
        """Seconds spent in `step` (the wait for the exchange, and the update)."""
        self.calls = 0
        self.bytes_per_step = 0.0
        """Gradient bytes this rank hands to the exchange per step (after compression)."""

    def attach(self, adapter: Any) -> None:
        self.adapter = adapter

    def step(self) -> None:
        started = time.perf_counter()
        self.adapter.optimizer_step()
        self.seconds += time.perf_counter() - started
        self.calls += 1

    def comm_seconds(self) -> float:
        """Seconds waiting for the exchange so far; NaN where a framework compiled it into
        its step (only Horovod's timeline sees it there)."""
        return self.seconds if self.calls else float("nan")

    def report(self) -> dict[str, Any]:
        return {"sync": self.name, "bytes_per_step": self.bytes_per_step,
                "optimizer_state_bytes": self.adapter.optimizer_state_bytes()}


class RingAllreduce(GradientExchange):
    """Horovod's ring-allreduce over the replicas' process set (None: every rank)."""

    name = "allreduce"

    def __init__(self, op: str, compression: str, ranks: list[int] | None, passes: int) -> None:
        super().__init__()
        self.op, self.compression, self.ranks, self.passes = op, compression, ranks, passes

    def attach(self, adapter: Any) -> None:
        super().attach(adapter)
        self.bytes_per_step = adapter.ring_reducer(self.op, self.compression, self.ranks,
                                                   self.passes)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compression": self.compression, "replicas":
                len(self.ranks) if self.ranks else None}


def replica_ranks(layout: ParallelLayout, rank: int) -> list[int] | None:
    """The ranks that average this rank's gradients (None: all of them)."""
    return layout.stage_ranks(layout.stage_of(rank)) if layout.pipelined else None


def apply_gradient_exchange(adapter: Any, layout: ParallelLayout, rank: int) -> GradientExchange:
    """Choose this rank's exchange from the layout and hand it to the adapter."""
    exchange: GradientExchange
    if layout.replicas == 1 and not layout.elastic:  # elastic jobs may grow
        exchange = GradientExchange()
    elif layout.sync == "ps":
        from hvdkit.parallel.ps import ParameterServerExchange

        exchange = ParameterServerExchange(layout, rank)
    elif layout.sync == "zero1":
        from hvdkit.parallel.zero import Zero1

        exchange = Zero1(layout.reduction, layout.compression, replica_ranks(layout, rank))
    elif layout.compression == "powersgd":
        from hvdkit.parallel.powersgd import PowerSGD

        exchange = PowerSGD(layout.reduction, replica_ranks(layout, rank),
                            layout.powersgd_rank, layout.powersgd_warmup_steps)
    else:
        passes = layout.microbatches if layout.pipelined else layout.accumulation
        exchange = RingAllreduce(layout.reduction, layout.compression,
                                 replica_ranks(layout, rank), passes)
    adapter.use_exchange(exchange)
    return exchange
