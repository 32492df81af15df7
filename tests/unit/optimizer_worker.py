"""Trains a tiny linear least-squares model with each of hvdkit's optimizers in one framework,
from the same weights and batches, and saves the parameters after each run for
tests/unit/test_optimizers.py to compare across frameworks.

    python tests/unit/optimizer_worker.py torch|tensorflow OUT.npz

Each case also runs through the framework's ZeRO-1 exchange at one rank (a flat shard of all
the parameters; Horovod initialised in this process alone), saved as "<case>/zero".
"""

from __future__ import annotations

import sys

import numpy as np

from hvdkit.config import OptimizerConfig

STEPS = 5
CASES = {
    "sgd": OptimizerConfig("sgd", lr=0.1, momentum=0.9),
    "sgd_wd": OptimizerConfig("sgd", lr=0.1, momentum=0.9, weight_decay=0.1),
    "adam_wd": OptimizerConfig("adam", lr=0.01, weight_decay=0.1),
    "adamw": OptimizerConfig("adamw", lr=0.01, weight_decay=0.1),
    "lamb": OptimizerConfig("lamb", lr=0.01, weight_decay=0.1),
    "lamb_no_wd": OptimizerConfig("lamb", lr=0.01),
}


def problem() -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Initial weights (6x4 kernel, bias) and STEPS batches of (x, y)."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    batches = [(rng.normal(size=(8, 6)).astype(np.float32),
                rng.normal(size=(8, 4)).astype(np.float32)) for _ in range(STEPS)]
    return weights, batches


def run_torch(config: OptimizerConfig, zero: bool) -> list[np.ndarray]:
    import horovod.torch as hvd
    import torch

    from hvdkit.adapters.torch.adapter import make_optimizer
    from hvdkit.adapters.torch.zero import ZeroExchange

    weights, batches = problem()
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    optimizer = make_optimizer(config, params)
    exchange = ZeroExchange(params, optimizer, hvd) if zero else None
    for x, y in batches:
        for p in params:
            p.grad = None
        out = torch.from_numpy(x) @ params[0] + params[1]
        ((out - torch.from_numpy(y)) ** 2).mean().backward()
        exchange.step(config.lr) if exchange else optimizer.step()
    return [p.detach().numpy().copy() for p in params]


def run_tensorflow(config: OptimizerConfig, zero: bool) -> list[np.ndarray]:
    import horovod.tensorflow as hvd
    import keras
    import tensorflow as tf

    from hvdkit.adapters.tensorflow.adapter import make_optimizer
    from hvdkit.adapters.tensorflow.zero import ZeroExchange

    weights, batches = problem()
    variables = [keras.Variable(w.copy()) for w in weights]
    optimizer = make_optimizer(config)
    exchange = ZeroExchange(variables, optimizer, hvd) if zero else None
    if not zero:
        optimizer.build(variables)

    @tf.function(autograph=False)  # compiled, as the adapter's step is
    def step(x: tf.Tensor, y: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            out = tf.matmul(x, variables[0]) + variables[1]
            loss = tf.reduce_mean(tf.square(out - y))
        grads = tape.gradient(loss, variables)
        if exchange is not None:
            exchange.apply(grads)
        else:
            optimizer.apply_gradients(zip(grads, variables, strict=True))

    for x, y in batches:
        step(tf.constant(x), tf.constant(y))
    return [v.numpy() for v in variables]


def main() -> None:
    framework, out = sys.argv[1], sys.argv[2]
    if framework == "torch":
        import horovod.torch as hvd
        import torch

        torch.set_num_threads(1)
        run = run_torch
    else:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        run = run_tensorflow
    hvd.init()
    arrays = {}
    for name, config in CASES.items():
        for zero in (False, True):
            for i, value in enumerate(run(config, zero)):
                arrays[f"{name}{'/zero' if zero else ''}/{i}"] = value
    np.savez(out, **arrays)


if __name__ == "__main__":
    main()
