"""Keras optimizers for a recipe's `optimizer` section, with the meaning PyTorch gives it.

`sgd` and `adam` take `weight_decay` as L2, wd * w added to each gradient in `update_step`,
which every path that applies gradients reaches (the compiled step, a pipeline stage's eager
step, ZeRO-1's shard, PowerSGD); Keras's own `weight_decay` is decoupled, so it is left unset.
`adamw` is Keras's AdamW (decoupled: w -= lr * wd * w, then Adam), as torch.optim.AdamW.
`lamb` is the paper's LAMB, as hvdkit/adapters/torch/optimizers.py: `keras.optimizers.Lamb`
decays the weights outside the trust ratio, not inside it, so it is not used.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from hvdkit.config import OptimizerConfig

ADAM_EPSILON = 1e-8  # torch's default (Keras's is 1e-7)
LAMB_EPSILON = 1e-6


class _CoupledL2:
    """Adds `l2` * w to each gradient before the wrapped optimizer's update (torch's
    `weight_decay` on SGD and Adam). Keeps `l2` in the config, so `from_config` (ZeRO-1's
    rebuild on a shard) keeps it."""

    def __init__(self, *args: Any, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.l2 = l2

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.l2:
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)  # L2 reaches every row
            gradient = ops.cast(gradient, variable.dtype) + ops.cast(self.l2,
                                                                      variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)  # type: ignore[misc]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}  # type: ignore[misc]


class SGD(_CoupledL2, keras.optimizers.SGD):
    """keras.optimizers.SGD with L2 weight decay on the gradient."""


class Adam(_CoupledL2, keras.optimizers.Adam):
    """keras.optimizers.Adam with L2 weight decay on the gradient."""


class Lamb(keras.optimizers.Optimizer):
    """LAMB: per tensor, r = m_hat / (sqrt(v_hat) + eps) + wd * w, then
    w -= lr * (||w|| / ||r||) * r (ratio 1 where either norm is 0)."""

    def __init__(self, learning_rate: Any = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = LAMB_EPSILON, weight_decay_rate: float = 0.0,
                 **kwargs: Any) -> None:
        # Not Keras's `weight_decay`, which the base class would apply outside the ratio.
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay_rate = weight_decay_rate

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        dtype = variable.dtype
        lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        # `_get_variable_index` is how Keras's guide to custom optimizers finds the slots.
        m = self._m[self._get_variable_index(variable)]
        v = self._v[self._get_variable_index(variable)]
        self.assign(m, m * self.beta_1 + gradient * (1 - self.beta_1))
        self.assign(v, v * self.beta_2 + ops.square(gradient) * (1 - self.beta_2))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, dtype), t))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, dtype), t))
        update = m_hat / (ops.sqrt(v_hat) + self.epsilon) + self.weight_decay_rate * variable
        w_norm, u_norm = ops.norm(ops.reshape(variable, [-1])), ops.norm(ops.reshape(update, [-1]))
        ratio = ops.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
        self.assign_sub(variable, lr * ratio * update)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "weight_decay_rate": self.weight_decay_rate}


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """The recipe's optimizer (built on the variables by the caller)."""
    wd = config.weight_decay
    if config.name == "sgd":
        return SGD(learning_rate=config.lr, momentum=config.momentum, l2=wd)
    if config.name == "adam":
        return Adam(learning_rate=config.lr, epsilon=ADAM_EPSILON, l2=wd)
    if config.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=config.lr, epsilon=ADAM_EPSILON,
                                      weight_decay=wd)
    return Lamb(learning_rate=config.lr, weight_decay_rate=wd)
