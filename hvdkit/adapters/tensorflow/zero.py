"""ZeRO-1 for TensorFlow / Keras 3: Horovod reduce-scatter of the gradients, the optimizer on
this rank's shard only, all-gather of the updated variables (the plan: hvdkit.parallel.zero).

    exchange = ZeroExchange(model.trainable_variables, keras.optimizers.Adam(...), hvd)
    exchange.apply(grads, lr)        # inside the step's tf.function, after the tape
    exchange.step(grads, lr)         # or eagerly (compiled once)

The optimizer given is a template: a copy from its config is built on one flat shard
variable, which alone holds slots. `state_dict()` gathers the slots into the list the
unsharded optimizer's `variables` would hold (its scalars, then each variable's slots), so
checkpoints resume at any number of ranks; `load_state_dict` cuts that list again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.parallel.zero import DEFAULT_BUCKET_BYTES, ShardPlan


def optimizer_state_bytes(optimizer: keras.optimizers.Optimizer) -> int:
    """Bytes of every variable the optimizer holds (its slots, step count and rate)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in optimizer.variables)


class ZeroExchange:
    """Reduce-scatter, sharded step, all-gather over `process_set` (Horovod's global set by
    default; a pipeline stage's set in a hybrid layout)."""

    def __init__(self, variables: Sequence[Any], optimizer: keras.optimizers.Optimizer,
                 hvd: Any, process_set: Any = None, reduction: str = "average",
                 compression: str = "none", bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.variables = list(variables)
        self.hvd = hvd
        self.process_set = process_set or hvd.global_process_set
        self.plan = ShardPlan([tuple(v.shape) for v in self.variables], self.process_set.size(),
                              self.process_set.rank(), bucket_bytes)
        self.op = {"average": hvd.Average, "sum": hvd.Sum}[reduction]
        self.fp16 = compression == "fp16"
        self.wire = hvd.Compression.fp16 if self.fp16 else hvd.Compression.none
        index = np.full(self.plan.shard_size, self.plan.total)  # padding: the appended 0
        for p in self.plan.pieces:
            start = self.plan.offsets[p.param] + p.param_offset
            index[p.shard_offset:p.shard_offset + p.size] = np.arange(start, start + p.size)
        self._index = tf.constant(index, tf.int64)
        self.shard = keras.Variable(np.zeros(self.plan.shard_size, np.float32),
                                    name="zero_shard")
        self.optimizer = type(optimizer).from_config(optimizer.get_config())
        self.optimizer.build([self.shard])
        slots = [self._is_slot(v) for v in self.optimizer.variables]
        if slots != sorted(slots):
            raise ValueError("ZeRO-1 expects the optimizer's scalars before its slots")
        self.guard: Any = None
        """Checks the reduced shard before the update (GraphGuard of
        hvdkit/adapters/tensorflow/precision.py); a non-finite step is skipped on every rank."""
        self._step = tf.function(self.apply, autograph=False)
        self._pull = tf.function(lambda: self.shard.assign(self._mine()), autograph=False)
        self.pull()
        self.seconds = 0.0  # eager `step` calls only: inside a compiled step, the timeline sees it

    def _is_slot(self, variable: Any) -> bool:
        return tuple(variable.shape) == (self.plan.shard_size,)

    def _mine(self) -> tf.Tensor:
        """This rank's part of the variables, as a shard (zeros in the padding). One gather
        by index: every rank traces the same ops, which Horovod's op names depend on."""
        flat = tf.concat([tf.reshape(v.value, [-1]) for v in self.variables] + [[0.0]], 0)
        return tf.gather(flat, self._index)

    def pull(self) -> None:
        """Take this rank's part of the variables into the shard: after anything but `apply`
        changed them (a load, a broadcast). `apply` keeps the two equal itself."""
        self._pull()

    def apply(self, grads: Sequence[tf.Tensor], lr: Any = None) -> None:
        """Reduce `grads` (one per variable), step the shard, gather every variable.
        Graph-safe: call it inside the step's tf.function."""
        if lr is not None:
            self.optimizer.learning_rate.assign(lr)
        flats = []
        for bucket in self.plan.buckets:
            parts = [tf.reshape(grads[i], [-1]) for i in bucket.params]
            if bucket.padded > bucket.size:
                parts.append(tf.zeros([bucket.padded - bucket.size], parts[0].dtype))
            flats.append(tf.concat(parts, 0))
        chunks = self.hvd.grouped_reducescatter(flats, compression=self.wire, op=self.op,
                                                process_set=self.process_set)
        grad = tf.concat(chunks, 0)
        if self.guard is None:
            self.optimizer.apply_gradients([(grad, self.shard)])
        else:
            self.guard.apply([grad], lambda gs: self.optimizer.apply_gradients(
                [(gs[0], self.shard)]))
        value = tf.convert_to_tensor(self.shard.value)
        n = self.plan.ranks
        mine = [value[b.shard_offset:b.shard_offset + b.chunk(n)] for b in self.plan.buckets]
        full = self.hvd.grouped_allgather(mine, process_set=self.process_set)
        for bucket, flat in zip(self.plan.buckets, full, strict=True):
            for i in bucket.params:
                start = self.plan.offsets[i] - bucket.start
                self.variables[i].assign(tf.reshape(flat[start:start + self.plan.sizes[i]],
                                                    self.plan.shapes[i]))

    def step(self, grads: Sequence[Any], lr: float | None = None) -> None:
        """`apply`, compiled, for eager callers."""
        started = time.perf_counter()
        self._step([tf.convert_to_tensor(g) for g in grads],
                   None if lr is None else tf.constant(lr, tf.float32))
        self.seconds += time.perf_counter() - started

    def state_bytes(self) -> int:
        """Optimizer-state bytes this rank holds."""
        return optimizer_state_bytes(self.optimizer)

    def bytes_per_step(self) -> int:
        return self.plan.bytes_per_step(2 if self.fp16 else 4)

    # Checkpoints: collectives, every rank of the process set calls them.

    def state_dict(self) -> list[np.ndarray]:
        """The unsharded optimizer's `variables`: its scalars, then per model variable its
        slots in the optimizer's order (Keras interleaves them so)."""
        scalars, slots = [], []
        for v in self.optimizer.variables:
            if self._is_slot(v):
                gathered = self.hvd.allgather(tf.reshape(v.value, [1, -1]),
                                              process_set=self.process_set)
                slots.append(self.plan.split(self.plan.unshard(gathered.numpy())))
            else:
                scalars.append(v.numpy())
        return scalars + [slot[i].copy() for i in range(len(self.variables)) for slot in slots]

    def load_state_dict(self, values: Sequence[np.ndarray]) -> None:
        """Take this rank's shard of a whole optimizer state (from `state_dict`, or from an
        unsharded optimizer over the same variables), at any number of ranks."""
        own = self.optimizer.variables
        n_scalars = sum(not self._is_slot(v) for v in own)
        n_slots = len(own) - n_scalars
        for v, value in zip(own[:n_scalars], values[:n_scalars], strict=True):
            v.assign(value)
        per_var = values[n_scalars:]
        for j, v in enumerate(own[n_scalars:]):
            full = np.concatenate([np.ravel(per_var[i * n_slots + j])
                                   for i in range(len(self.variables))])
            v.assign(self.plan.shard(full))
