"""TensorFlow / Keras 3 training-step options: the dtype policy (mixed_bfloat16,
mixed_float16), and the step guard between Horovod's exchange and the update (unscale,
global-norm clip, skip on overflow; the rules are hvdkit.parallel.loss_scale's), graph-safe so
that it compiles into the adapter's one `tf.function` step.

The loss scale lives in a variable the step reads; the step writes whether its gradients were
finite into another, which `after_step` reads on the host (one scalar per step, fp16 only) to
apply the scale's rules and write the new scale back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from hvdkit.parallel.loss_scale import StepGuard

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def set_policy(precision: str) -> None:
    """Keras's global dtype policy for layers built from now on (fp32 sets it back)."""
    keras.mixed_precision.set_global_policy(POLICIES[precision])


def as_float32(x: tf.Tensor) -> tf.Tensor:
    """A model's (or chunk's) output in float32: the loss, and activations sent between
    pipeline stages as numpy (which has no bfloat16), stay float32."""
    return tf.cast(x, tf.float32) if x.dtype in (tf.bfloat16, tf.float16) else x


class GraphGuard:
    """The StepGuard's mechanics in TensorFlow, for one exchange."""

    def __init__(self, guard: StepGuard, hvd: Any) -> None:
        self.guard, self.hvd = guard, hvd
        self.scale = tf.Variable(guard.scale, trainable=False, dtype=tf.float32,
                                 name="hvdkit_loss_scale")
        self.finite = tf.Variable(True, trainable=False, name="hvdkit_finite")

    def apply(self, grads: Sequence[tf.Tensor], update: Callable[[list[tf.Tensor]], Any]
              ) -> None:
        """Unscale `grads`, sum their squares over every rank (one allreduce), clip to the
        global norm and `update(grads)` only where they are finite (the same on every rank).
        Graph-safe."""
        grads = list(grads)
        if self.guard.loss_scale is not None:
            inv = 1.0 / self.scale
            grads = [g * tf.cast(inv, g.dtype) for g in grads]
        squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))
                            * self.guard.weight(i) for i, g in enumerate(grads)])
        total = self.hvd.allreduce(tf.reshape(squares, [1]), op=self.hvd.Sum,
                                   name="hvdkit.grad_squares")[0]
        finite = tf.math.is_finite(total)
        if self.guard.clip_norm > 0:
            norm = tf.sqrt(total) + 1e-6
            coefficient = tf.minimum(tf.constant(1.0, tf.float64), self.guard.clip_norm / norm)
            grads = [g * tf.cast(coefficient, g.dtype) for g in grads]

        def apply() -> tf.Tensor:
            update(grads)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        self.finite.assign(finite)

    def after_step(self) -> None:
        """On the host, after a step: the scale's rules (fp16 only), the new scale written."""
        if self.guard.loss_scale is not None:
            self.guard.update(bool(self.finite.numpy()))
            self.scale.assign(self.guard.scale)

    def loaded(self) -> None:
        """The guard's state was restored (a checkpoint): the step reads the scale anew."""
        self.scale.assign(self.guard.scale)
