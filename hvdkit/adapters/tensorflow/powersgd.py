"""PowerSGD for TensorFlow / Keras 3: low-rank gradients through Horovod allreduce, with error
feedback (the plan and the algorithm: hvdkit.parallel.powersgd).

    exchange = PowerSGDExchange(model.trainable_variables, optimizer, hvd, rank=2)
    exchange.apply(grads, lr, exchange.compressing)   # inside the step's tf.function
    exchange.step(grads, lr)                           # or eagerly (compiled once per mode)

`compressing` is a Python bool, so a step function traces once for the warm-up and once
after it. Two grouped allreduces per compressed step: the P's with every uncompressed
gradient, then the Q's. The Q's and errors live in `tf.Variable`s; `state_dict` gathers them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.parallel.powersgd import (
    DEFAULT_MIN_COMPRESSION,
    DEFAULT_RANK,
    DEFAULT_WARMUP_STEPS,
    PowerSGDPlan,
)


class PowerSGDExchange:
    """Compressed gradient averaging over `process_set`, then the optimizer's step."""

    def __init__(self, variables: Sequence[Any], optimizer: keras.optimizers.Optimizer,
                 hvd: Any, process_set: Any = None, reduction: str = "average",
                 rank: int = DEFAULT_RANK, warmup_steps: int = DEFAULT_WARMUP_STEPS,
                 min_compression: float = DEFAULT_MIN_COMPRESSION,
                 keep_whole: Sequence[int] = ()) -> None:
        self.variables = list(variables)
        self.optimizer = optimizer
        self.hvd = hvd
        self.process_set = process_set or hvd.global_process_set
        self.op = {"average": hvd.Average, "sum": hvd.Sum}[reduction]
        # Keras keeps a kernel's output channels last: matrices are out × rest, as in PyTorch.
        self.plan = PowerSGDPlan([tuple(v.shape) for v in self.variables], rank, warmup_steps,
                                 self.process_set.size(), min_compression, out_dim="last",
                                 keep_whole=keep_whole)
        self.qs = [tf.Variable(self.plan.initial_q(m), trainable=False, name=f"powersgd_q{i}")
                   for i, m in enumerate(self.plan.matrices)]
        self.errors = [tf.Variable(tf.zeros([m.rows, m.cols]), trainable=False,
                                   name=f"powersgd_error{i}")
                       for i, m in enumerate(self.plan.matrices)]
        self.steps = 0
        self.seconds = 0.0  # eager `step` calls only
        self._step = tf.function(self.apply, autograph=False)

    @property
    def compressing(self) -> bool:
        """Whether the next step is compressed (past the warm-up)."""
        return self.plan.compressing(self.steps)

    def _allreduce(self, tensors: list[tf.Tensor]) -> list[tf.Tensor]:
        if not tensors:
            return []
        return list(self.hvd.grouped_allreduce(tensors, op=self.op,
                                               process_set=self.process_set))

    def reduce(self, grads: Sequence[tf.Tensor], compressing: bool) -> list[tf.Tensor]:
        """The ranks' gradients combined: whole in the warm-up, low-rank after it."""
        grads = list(grads)
        if not compressing:
            return self._allreduce(grads)
        matrices = self.plan.matrices
        ms = [_as_matrix(grads[m.index], m.rows, m.cols) + e
              for m, e in zip(matrices, self.errors, strict=True)]
        plain = [grads[i] for i in self.plan.uncompressed]
        reduced = self._allreduce([m @ q for m, q in zip(ms, self.qs, strict=True)] + plain)
        ps = [tf.linalg.qr(p).q for p in reduced[:len(ms)]]
        for i, r in zip(self.plan.uncompressed, reduced[len(ms):], strict=True):
            grads[i] = r
        qs = self._allreduce([tf.transpose(m) @ p for m, p in zip(ms, ps, strict=True)])
        for matrix, m, p, q, q_var, e_var in zip(matrices, ms, ps, qs, self.qs, self.errors,
                                                 strict=True):
            approx = p @ tf.transpose(q)
            q_var.assign(q)
            e_var.assign(m - approx)
            grads[matrix.index] = _from_matrix(approx, self.plan.shapes[matrix.index])
        return grads

    def apply(self, grads: Sequence[tf.Tensor], lr: Any, compressing: bool) -> None:
        """Reduce `grads` and step the optimizer. Graph-safe; the caller counts the step
        (`done()`), since a compiled function runs Python once per trace."""
        self.optimizer.learning_rate.assign(lr)
        reduced = self.reduce(grads, compressing)
        self.optimizer.apply_gradients(zip(reduced, self.variables, strict=True))

    def done(self) -> None:
        """Count one optimizer step (moves the warm-up along)."""
        self.steps += 1

    def step(self, grads: Sequence[Any], lr: float) -> None:
        """`apply`, compiled, for eager callers; counts the step."""
        started = time.perf_counter()
        self._step([tf.convert_to_tensor(g) for g in grads], tf.constant(lr, tf.float32),
                   self.compressing)
        self.seconds += time.perf_counter() - started
        self.done()

    def bytes_per_step(self) -> float:
        """Bytes this rank sends per step now (uncompressed during the warm-up)."""
        return self.plan.bytes_per_step(self.compressing)

    def state_dict(self) -> dict[str, Any]:
        """Step count, Q's, and every rank's errors (a collective: gathered over the process
        set, `[ranks, rows, cols]` each). The optimizer's variables are the adapter's."""
        errors = [self.hvd.allgather(e.value()[None], process_set=self.process_set).numpy()
                  for e in self.errors]
        return {"steps": self.steps, "qs": [q.numpy() for q in self.qs], "errors": errors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore. Each rank takes its own errors back; at another number of ranks they
        restart at zero (the Q's, equal on every rank, are kept)."""
        self.steps = int(state["steps"])
        for q, value in zip(self.qs, state["qs"], strict=True):
            q.assign(value)
        same = all(np.shape(e)[0] == self.plan.ranks for e in state["errors"])
        for e, value in zip(self.errors, state["errors"], strict=True):
            e.assign(value[self.process_set.rank()] if same else tf.zeros_like(e))


def _as_matrix(grad: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """A Keras kernel (..., out) as the matrix out × rest (its last axis moved first)."""
    n = len(grad.shape)
    return tf.reshape(tf.transpose(grad, [n - 1, *range(n - 1)]), [rows, cols])


def _from_matrix(matrix: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """The inverse of `_as_matrix` for a kernel of `shape`."""
    n = len(shape)
    return tf.transpose(tf.reshape(matrix, [shape[-1], *shape[:-1]]), [*range(1, n), 0])
