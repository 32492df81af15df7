"""Gradient exchange: how the data-parallel replicas combine their gradients each step.

    plan = plan_exchange(layout, rank)           # framework-free: which exchange, over whom
    adapter.use_exchange(plan)                   # the adapter builds its framework's object

One exchange per job, chosen from `parallel.sync` and `parallel.compression`, for the replicas
of this rank: every rank in pure data parallelism, the ranks of this rank's stage in a hybrid
pipeline (a Horovod process set), whether or not the model is also placed over devices. Each
framework implements every kind as one object with the interface of `GradientExchange`
(hvdkit/adapters/<framework>/exchange.py); the parameter server, which moves numpy, is one
framework-free object for both (hvdkit.parallel.ps).

    none      one replica, or parallel.sync none: the optimizer steps on the local gradients
    ring      Horovod ring-allreduce (op average | sum | adasum; fp16 on the wire)
    ps        a parameter server on the replicas' first rank, over mpi4py
    zero1     reduce-scatter, the optimizer on this rank's shard, all-gather (parallel.zero)
    powersgd  low-rank factors by allreduce, error feedback (parallel.powersgd)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvdkit.layout import ParallelLayout

KINDS = ("none", "ring", "ps", "zero1", "powersgd")


@dataclass(frozen=True)
class ExchangePlan:
    """Which exchange this rank runs and over which ranks (framework-free)."""

    kind: str
    """One of KINDS."""
    op: str = "average"
    """average | sum | adasum (the ring's reduction)."""
    compression: str = "none"
    """none | fp16 | powersgd (the wire format)."""
    ranks: tuple[int, ...] | None = None
    """The replicas that combine gradients with this rank (None: every rank)."""
    passes: int = 1
    """Backward passes per step (accumulation, or a pipeline's micro-batches)."""
    powersgd_rank: int = 2
    powersgd_warmup_steps: int = 10
    stage: int = 0
    """This rank's pipeline stage (the parameter server's communicator is split by stage)."""
    replica: int = 0


def replica_ranks(layout: ParallelLayout, rank: int) -> tuple[int, ...] | None:
    """The ranks that average this rank's gradients (None: all of them)."""
    return tuple(layout.stage_ranks(layout.stage_of(rank))) if layout.pipelined else None


def plan_exchange(layout: ParallelLayout, rank: int) -> ExchangePlan:
    """This rank's exchange, from the layout (whose rules have accepted the combination)."""
    common = {"op": layout.reduction, "compression": layout.compression,
              "ranks": replica_ranks(layout, rank), "stage": layout.stage_of(rank),
              "replica": layout.replica_of(rank)}
    if layout.sync == "none" or (layout.replicas == 1 and not layout.elastic):  # elastic grows
        return ExchangePlan("none", **common)
    if layout.sync == "ps":
        return ExchangePlan("ps", **common)
    if layout.sync == "zero1":
        return ExchangePlan("zero1", **common)
    if layout.compression == "powersgd":
        return ExchangePlan("powersgd", powersgd_rank=layout.powersgd_rank,
                            powersgd_warmup_steps=layout.powersgd_warmup_steps, **common)
    passes = layout.microbatches if layout.pipelined else layout.accumulation
    return ExchangePlan("ring", passes=passes, **common)


class GradientExchange:
    """The replicas' gradients combined, then the optimizer's step; counts its cost.

    Each framework's exchanges subclass this and implement `_step` (eager: the gradients as the
    adapter holds them after backward); TensorFlow's also compile `apply` into its step where
    `in_step`. `state`/`load_state` carry what the exchange keeps between steps (PowerSGD's
    Q's and errors) into checkpoints; `optimizer_state`/`load_optimizer_state` are the
    optimizer's state as a checkpoint holds it (ZeRO-1 gathers its shards)."""

    name = "none"
    in_step = True
    """True where the exchange may run inside a compiled step (TensorFlow's); False where it
    moves numpy itself (the parameter server)."""
    collective_state = False
    """True where `state()`/`optimizer_state()` are collectives every replica calls."""

    def __init__(self, plan: ExchangePlan) -> None:
        self.plan = plan
        self.adapter: Any = None
        self.seconds = 0.0
        """Seconds spent in `step` (the wait for the exchange, and the update)."""
        self.calls = 0
        self.bytes_per_step = 0.0
        """Gradient bytes this rank hands to the exchange per step (after compression)."""
        self.guard: Any = None
        """fp16's loss scale and the global-norm clip between the exchange and the update
        (hvdkit.parallel.loss_scale.StepGuard), or None."""

    def use_guard(self, guard: Any) -> None:
        """Guard every update from now on (after `attach`): unscale, clip, skip on overflow."""
        self.guard = guard

    def attach(self, adapter: Any) -> None:
        """Take over `adapter`'s optimizer (wrap or replace it) before the first step."""
        self.adapter = adapter

    def step(self) -> None:
        """Combine the replicas' gradients and update the parameters."""
        started = time.perf_counter()
        self._step()
        self.seconds += time.perf_counter() - started
        self.calls += 1

    def _step(self) -> None:
        self.adapter.optimizer_step()

    def comm_seconds(self) -> float:
        """Seconds waiting for the exchange so far; NaN where a framework compiled it into
        its step (only Horovod's timeline sees it there)."""
        return self.seconds if self.calls else float("nan")

    def state(self) -> dict[str, Any]:
        """What the exchange keeps between steps, for a checkpoint (the loss scale)."""
        return self.guard.state() if self.guard is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` (keys it does not know are ignored)."""
        if self.guard is not None:
            self.guard.load_state(state)

    def report(self) -> dict[str, Any]:
        return {"sync": self.name, "bytes_per_step": self.bytes_per_step,
                "optimizer_state_bytes": self.adapter.optimizer_state_bytes(),
                **(self.guard.report() if self.guard is not None else {})}
