"""PyTorch's gradient exchanges, one object each with hvdkit.parallel.exchange's interface.

Each takes the adapter's optimizer over when attached (Horovod's DistributedOptimizer for the
ring, a sharded optimizer for ZeRO-1, PowerSGD's mechanics beside it), and `step()` combines the
replicas' gradients and updates. `adapter.optimizer_step()` is the local update (weights tied
to other pipeline stages summed first); every exchange ends in it.
"""

from __future__ import annotations

from typing import Any

import torch

from hvdkit.adapters.torch.state import to_numpy, to_torch
from hvdkit.parallel.exchange import ExchangePlan, GradientExchange
from hvdkit.parallel.powersgd import warn_little_compressed
from hvdkit.parallel.ps import ParameterServerExchange


def _op(hvd: Any, op: str) -> Any:
    return {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}[op]


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class LocalUpdate(GradientExchange):
    """One replica: the optimizer steps on the local gradients."""

    name = "none"


class RingAllreduce(GradientExchange):
    """Horovod's DistributedOptimizer over the replicas' process set: each gradient's
    allreduce starts during backward, as soon as it is ready."""

    name = "allreduce"

    def attach(self, adapter: Any) -> None:
        super().attach(adapter)
        hvd, plan = adapter.hvd, self.plan
        codec = hvd.Compression.fp16 if plan.compression == "fp16" else hvd.Compression.none
        adapter.optimizer = hvd.DistributedOptimizer(
            adapter.optimizer, named_parameters=adapter.model.named_parameters(),
            op=_op(hvd, plan.op), compression=codec, backward_passes_per_step=plan.passes,
            process_set=adapter.process_set(plan.ranks))
        # The bytes Horovod is handed per step: each gradient as the compressor leaves it.
        self.bytes_per_step = float(sum(_nbytes(codec.compress(torch.zeros_like(p))[0])
                                        for p in adapter.model.parameters()))

    def _step(self) -> None:
        optimizer = self.adapter.optimizer
        optimizer.synchronize()  # the allreduces in flight write the gradients
        with optimizer.skip_synchronize():
            self.adapter.optimizer_step()

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compression": self.plan.compression,
                "replicas": len(self.plan.ranks) if self.plan.ranks else None}


class Zero1(GradientExchange):
    """ZeRO-1: the optimizer becomes a sharded one (hvdkit/adapters/torch/zero.py) with the
    same members; its step reduce-scatters, steps this rank's shard and all-gathers."""

    name = "zero1"
    collective_state = True

    def attach(self, adapter: Any) -> None:
        from hvdkit.adapters.torch.zero import ZeroExchange

        super().attach(adapter)
        plan = self.plan
        adapter.optimizer = ZeroExchange(adapter.model.parameters(), adapter.optimizer,
                                         adapter.hvd, adapter.process_set(plan.ranks), plan.op,
                                         plan.compression)
        self.shards = adapter.optimizer.plan
        self.sharded = adapter.optimizer
        wire = 2 if plan.compression == "fp16" else 4
        self.bytes_per_step = float(self.shards.bytes_per_step(wire))

    def use_guard(self, guard: Any) -> None:
        from hvdkit.adapters.torch.precision import guard_gradients

        super().use_guard(guard)
        hvd = self.adapter.hvd
        self.sharded.guard = None if guard is None else \
            (lambda grads: guard_gradients(guard, grads, hvd))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compression": self.plan.compression,
                "bytes_sent_per_step": self.bytes_per_step, **self.shards.describe()}


class PowerSGD(GradientExchange):
    """PowerSGD (hvdkit/adapters/torch/powersgd.py): low-rank factors by allreduce with error
    feedback; weights tied across pipeline stages are allreduced whole, so their copies stay
    equal."""

    name = "allreduce"
    collective_state = True  # every rank's errors go into a checkpoint

    def attach(self, adapter: Any) -> None:
        from hvdkit.adapters.torch.powersgd import PowerSGDExchange

        super().attach(adapter)
        plan = self.plan
        tied = adapter.tied.indices if adapter.tied is not None else ()
        self.mechanics = PowerSGDExchange(
            adapter.model.parameters(), adapter.optimizer, adapter.hvd,
            adapter.process_set(plan.ranks), plan.op, plan.powersgd_rank,
            plan.powersgd_warmup_steps, keep_whole=tied)
        self.bytes_per_step = self.mechanics.plan.handed_bytes()
        warn_little_compressed(self.mechanics.plan, adapter.hvd.rank())

    def _step(self) -> None:
        self.adapter.sum_tied()
        self.mechanics.step()  # reduces the gradients, then steps the optimizer

    def state(self) -> dict[str, Any]:
        return {"powersgd": to_numpy(self.mechanics.state_dict())}

    def load_state(self, state: dict[str, Any]) -> None:
        if "powersgd" in state:
            self.mechanics.load_state_dict(to_torch(state["powersgd"]))

    def report(self) -> dict[str, Any]:
        return {**super().report(), **self.mechanics.plan.report()}


EXCHANGES: dict[str, type[GradientExchange]] = {
    "none": LocalUpdate, "ring": RingAllreduce, "ps": ParameterServerExchange,
    "zero1": Zero1, "powersgd": PowerSGD,
}


def make_exchange(plan: ExchangePlan) -> GradientExchange:
    return EXCHANGES[plan.kind](plan)
