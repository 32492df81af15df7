"""TensorFlow's gradient exchanges, one object each with hvdkit.parallel.exchange's interface.

`apply(grads, compressing)` combines the replicas' gradients and updates, graph-safe, so that
the adapter compiles it into its one `tf.function` step (the ring's `hvd.grouped_allreduce` is
the call `hvd.DistributedGradientTape` makes); `step()` runs it eagerly on the gradients a
pipeline stage accumulated. `compressing` is a Python value (a step traces once per value),
and `after_step` counts a step outside the compiled function. The optimizer's variables are the
exchange's to save and broadcast, since ZeRO-1 keeps only this rank's shard of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from hvdkit.parallel.exchange import ExchangePlan, GradientExchange
from hvdkit.parallel.powersgd import warn_little_compressed
from hvdkit.parallel.ps import ParameterServerExchange


def _op(hvd: Any, op: str) -> Any:
    return {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}[op]


class LocalUpdate(GradientExchange):
    """One replica: the optimizer steps on the local gradients."""

    name = "none"
    compressing = False
    graph_guard: Any = None
    """The guard's TensorFlow mechanics (hvdkit/adapters/tensorflow/precision.py), or None."""

    def attach(self, adapter: Any) -> None:
        super().attach(adapter)
        self._compiled = tf.function(self.apply, autograph=False)

    def use_guard(self, guard: Any) -> None:
        from hvdkit.adapters.tensorflow.precision import GraphGuard

        super().use_guard(guard)
        self.graph_guard = None if guard is None else GraphGuard(guard, self.adapter.hvd)

    def apply(self, grads: Sequence[tf.Tensor], compressing: bool) -> None:
        """Combine `grads` across the replicas and update (graph-safe)."""
        reduced = self.reduce(list(grads), compressing)

        def update(gs: list[tf.Tensor]) -> None:
            self.adapter.optimizer.apply_gradients(zip(gs, self.adapter.trainable, strict=True))

        if self.graph_guard is None:
            update(reduced)
        else:
            self.graph_guard.apply(reduced, update)

    def reduce(self, grads: list[tf.Tensor], compressing: bool) -> list[tf.Tensor]:
        return grads

    def _step(self) -> None:
        self.adapter.sum_tied()
        self._compiled(self.adapter.accumulated_gradients(), self.compressing)
        self.after_step()

    def after_step(self) -> None:
        """Count one optimizer step (outside any compiled function): the loss scale's rules."""
        if self.graph_guard is not None:
            self.graph_guard.after_step()

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if self.graph_guard is not None:
            self.graph_guard.loaded()

    def optimizer_variables(self) -> list[Any]:
        """The optimizer variables every replica holds alike (broadcast at the start)."""
        return list(self.adapter.optimizer.variables)

    def optimizer_state(self) -> Any:
        return [v.numpy() for v in self.adapter.optimizer.variables]

    def load_optimizer_state(self, values: Any) -> None:
        for variable, value in zip(self.adapter.optimizer.variables, values, strict=True):
            variable.assign(value)

    def parameters_changed(self) -> None:
        """The parameters were assigned outside a step (a broadcast, a checkpoint)."""


class RingAllreduce(LocalUpdate):
    """Horovod's grouped allreduce of every gradient over the replicas' process set."""

    name = "allreduce"

    def attach(self, adapter: Any) -> None:
        super().attach(adapter)
        hvd, plan = adapter.hvd, self.plan
        self.codec = hvd.Compression.fp16 if plan.compression == "fp16" else hvd.Compression.none
        self.process_set = adapter.process_set(plan.ranks)
        # The bytes Horovod is handed per step: each gradient as the compressor leaves it.
        self.bytes_per_step = float(sum(
            int(np.prod(v.shape)) * self.codec.compress(tf.zeros((), v.dtype))[0].dtype.size
            for v in adapter.trainable))

    def reduce(self, grads: list[tf.Tensor], compressing: bool) -> list[tf.Tensor]:
        hvd = self.adapter.hvd
        return hvd.grouped_allreduce(grads, op=_op(hvd, self.plan.op), compression=self.codec,
                                     process_set=self.process_set)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compression": self.plan.compression,
                "replicas": len(self.plan.ranks) if self.plan.ranks else None}


class Zero1(LocalUpdate):
    """ZeRO-1 (hvdkit/adapters/tensorflow/zero.py): reduce-scatter per bucket, the optimizer
    on this rank's shard alone, all-gather of the parameters."""

    name = "zero1"
    collective_state = True

    def attach(self, adapter: Any) -> None:
        from hvdkit.adapters.tensorflow.zero import ZeroExchange

        super().attach(adapter)
        plan = self.plan
        self.sharded = ZeroExchange(adapter.trainable, adapter.optimizer, adapter.hvd,
                                    adapter.process_set(plan.ranks), plan.op, plan.compression)
        adapter.optimizer = self.sharded.optimizer  # over this rank's shard alone
        wire = 2 if plan.compression == "fp16" else 4
        self.bytes_per_step = float(self.sharded.plan.bytes_per_step(wire))

    def use_guard(self, guard: Any) -> None:
        super().use_guard(guard)
        self.sharded.guard = self.graph_guard  # between its reduce-scatter and its update

    def apply(self, grads: Sequence[tf.Tensor], compressing: bool) -> None:
        self.sharded.apply(grads)

    def optimizer_variables(self) -> list[Any]:
        return []  # each rank's shard differs

    def optimizer_state(self) -> Any:
        return self.sharded.state_dict()  # a collective: the shards gathered

    def load_optimizer_state(self, values: Any) -> None:
        self.sharded.load_state_dict(values)

    def parameters_changed(self) -> None:
        self.sharded.pull()  # the shard follows the variables

    def report(self) -> dict[str, Any]:
        return {**super().report(), "compression": self.plan.compression,
                "bytes_sent_per_step": self.bytes_per_step, **self.sharded.plan.describe()}


class PowerSGD(LocalUpdate):
    """PowerSGD (hvdkit/adapters/tensorflow/powersgd.py): low-rank factors by allreduce with
    error feedback; weights tied across pipeline stages are allreduced whole."""

    name = "allreduce"
    collective_state = True  # every rank's errors go into a checkpoint

    def attach(self, adapter: Any) -> None:
        from hvdkit.adapters.tensorflow.powersgd import PowerSGDExchange

        super().attach(adapter)
        plan = self.plan
        tied = adapter.tied.indices if adapter.tied is not None else ()
        self.mechanics = PowerSGDExchange(
            adapter.trainable, adapter.optimizer, adapter.hvd, adapter.process_set(plan.ranks),
            plan.op, plan.powersgd_rank, plan.powersgd_warmup_steps, keep_whole=tied)
        self.bytes_per_step = self.mechanics.plan.handed_bytes()
        warn_little_compressed(self.mechanics.plan, adapter.hvd.rank())

    @property
    def compressing(self) -> bool:  # type: ignore[override]
        return self.mechanics.compressing

    def reduce(self, grads: list[tf.Tensor], compressing: bool) -> list[tf.Tensor]:
        return self.mechanics.reduce(grads, compressing)

    def after_step(self) -> None:
        self.mechanics.done()

    def state(self) -> dict[str, Any]:
        return {"powersgd": self.mechanics.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        if "powersgd" in state:
            self.mechanics.load_state_dict(state["powersgd"])

    def report(self) -> dict[str, Any]:
        return {**super().report(), **self.mechanics.plan.report()}


class ParameterServer(ParameterServerExchange):
    """The framework-free parameter server, with the optimizer's variables as a ring's."""

    compressing = False
    graph_guard: Any = None
    """Always None: the layout refuses fp16 and clip_norm with the parameter server."""

    def optimizer_variables(self) -> list[Any]:
        return list(self.adapter.optimizer.variables)

    optimizer_state = LocalUpdate.optimizer_state
    load_optimizer_state = LocalUpdate.load_optimizer_state
    parameters_changed = LocalUpdate.parameters_changed
    after_step = LocalUpdate.after_step


EXCHANGES: dict[str, type[GradientExchange]] = {
    "none": LocalUpdate, "ring": RingAllreduce, "ps": ParameterServer,
    "zero1": Zero1, "powersgd": PowerSGD,
}


def make_exchange(plan: ExchangePlan) -> GradientExchange:
    return EXCHANGES[plan.kind](plan)
