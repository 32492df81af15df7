"""Runs inside a 2-rank Horovod job: hvdkit's Trainer against a hand-written Horovod loop on the
same model, data, optimizer, batch and threads, interleaved every few steps in one process.

The trainer runs; at each of its metric flushes (every SEGMENT steps, on every rank) and at each
epoch's end, a callback runs SEGMENT steps of the hand-written loop, then hands back. So the two
alternate about once a second and see the same machine: on these shared hosts the speed drifts
by ±10% from one minute to the next, which alternating whole runs did not average out. hvdkit's
segment is the wall time from the end of one hand-written segment to the start of the next:
its steps, its input path and its metric flush; it is compared with the two hand-written
segments around it.
Rank 0 prints one JSON line with both rates per segment.

The hand-written loops (steploop.py) are the limit: the data set resident as one tensor per rank,
each batch sliced out of it inside the step. TensorFlow's reduces all gradients in one grouped
allreduce (`num_groups=1`), as hvdkit does.

    horovodrun -np 2 python benchmarks/workers/overhead.py --framework torch
    horovodrun -np 2 python benchmarks/workers/overhead.py --framework tensorflow \\
        --recipe recipes/gpt_text.yaml --segments 12
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from steploop import classes, resident_shard, torch_step

from hvdkit import Trainer, load_recipe
from hvdkit.runtime.rank import rank_from_env, run_worker
from hvdkit.training.callbacks import Callback

RECIPE = "recipes/synthetic_cnn.yaml"
SEGMENT = 5  # steps of each loop in turn; the trainer's log_every_steps
WARMUP_SEGMENTS = 2  # tracing, allocation, the first negotiations: not kept


class Interleaved(Callback):
    """At each metric flush of SEGMENT steps, and at each epoch's end: SEGMENT steps of the
    hand-written loop (built at the first, once hvdkit has started Horovod), timed; the time
    since the previous one is hvdkit's, over the steps it counted (an epoch's last flush may
    hold fewer)."""

    def __init__(self, make_raw: Callable[[], tuple[Callable[[int], Any], int]]) -> None:
        self.make_raw = make_raw
        self.raw: Callable[[int], Any] | None = None
        self.batches = self.done = self.counted = 0
        self.mark: float | None = None
        self.hvdkit_steps: list[int] = []
        self.hvdkit_seconds: list[float] = []
        self.raw_seconds: list[float] = []

    def on_step_end(self, step: int, logs: dict) -> None:
        self.counted += 1
        if self.counted >= SEGMENT:  # the last step of a full flush
            self._run_raw()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.counted:
            self._run_raw()

    def _run_raw(self) -> None:
        if self.mark is not None:
            self.hvdkit_seconds.append(time.perf_counter() - self.mark)
            self.hvdkit_steps.append(self.counted)
        self.counted = 0
        if self.raw is None:
            self.raw, self.batches = self.make_raw()
        started = time.perf_counter()
        for _ in range(SEGMENT):
            last = self.raw(self.done % self.batches)
            self.done += 1
        np.asarray(last)  # read back: every step has run
        self.raw_seconds.append(time.perf_counter() - started)
        self.mark = time.perf_counter()

    def rates(self) -> tuple[list[float], list[float]]:
        """Steps/s per segment after the warm-up: hvdkit's, each beside the hand-written rate
        of the two segments around it (their mean time: a drift in the machine's speed
        cancels)."""
        raw, ours, steps = self.raw_seconds, self.hvdkit_seconds, self.hvdkit_steps
        kept = range(WARMUP_SEGMENTS, min(len(ours), len(raw) - 1))
        return ([steps[k] / ours[k] for k in kept],
                [2 * SEGMENT / (raw[k] + raw[k + 1]) for k in kept])


def raw_torch(recipe) -> tuple[Callable[[int], Any], int]:
    import horovod.torch as hvd
    import torch

    from hvdkit.adapters.torch.models import MODELS

    torch.manual_seed(recipe.train.seed)
    x, y, data = resident_shard(recipe, hvd.rank(), hvd.size())
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = MODELS.get(recipe.model.name)(recipe.model, tuple(x.shape[1:]), classes(data))
    o = recipe.optimizer
    opt = (torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                           weight_decay=o.weight_decay) if o.name == "sgd" else
           torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay))
    # Names of its own: hvdkit's model, alive beside it, has the same parameter names.
    opt = hvd.DistributedOptimizer(opt, named_parameters=[
        (f"raw.{name}", p) for name, p in model.named_parameters()])
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    b = recipe.train.batch_size
    return torch_step(model, opt, x, y, b, recipe.train.precision), len(y) // b


def raw_tensorflow(recipe) -> tuple[Callable[[int], Any], int]:
    import horovod.tensorflow as hvd
    import keras
    import tensorflow as tf

    from hvdkit.adapters.tensorflow.models import MODELS

    keras.utils.set_random_seed(recipe.train.seed)
    keras.mixed_precision.set_global_policy(
        {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(recipe.train.precision,
                                                                "float32"))
    xs, ys, data = resident_shard(recipe, hvd.rank(), hvd.size())
    x, y = tf.constant(xs), tf.constant(ys)
    model = MODELS.get(recipe.model.name)(recipe.model, tuple(xs.shape[1:]), classes(data))
    o = recipe.optimizer
    decay = o.weight_decay or None
    opt = (keras.optimizers.SGD(learning_rate=o.lr, momentum=o.momentum, weight_decay=decay)
           if o.name == "sgd" else keras.optimizers.Adam(learning_rate=o.lr, weight_decay=decay))
    opt.build(model.trainable_variables)
    hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
    b = recipe.train.batch_size

    @tf.function
    def step(i):
        xb, yb = x[i * b:(i + 1) * b], y[i * b:(i + 1) * b]
        with tf.GradientTape() as tape:
            logits = tf.cast(model(xb, training=True), tf.float32)  # as mixed precision needs
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=yb, logits=logits))
        # One grouped allreduce, as hvdkit does; embeddings' gradients as dense tensors.
        tape = hvd.DistributedGradientTape(tape, num_groups=1, sparse_as_dense=True)
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return (lambda i: step(tf.constant(i))), len(ys) // b


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--segments", type=int, default=12,
                        help="segments of each loop kept (after the warm-up ones)")
    args = parser.parse_args()
    steps = SEGMENT * (args.segments + WARMUP_SEGMENTS + 1)
    # Evaluation only after the last step: the segments compare training steps alone.
    recipe = load_recipe(args.recipe, [*args.overrides, "train.threads=1", "train.epochs=100",
                                       "train.eval_every_epochs=100",
                                       f"train.log_every_steps={SEGMENT}",
                                       f"train.max_steps={steps}"])
    make_raw = raw_torch if args.framework == "torch" else raw_tensorflow
    interleaved = Interleaved(lambda: make_raw(recipe))
    Trainer(recipe, args.framework, callbacks=[interleaved], progress=False).fit()
    hvdkit_rates, raw_rates = interleaved.rates()
    if rank_from_env() == 0:
        print(json.dumps({"framework": args.framework, "recipe": args.recipe,
                          "batch_per_rank": recipe.train.batch_size,
                          "raw_steps_per_sec": raw_rates,
                          "hvdkit_steps_per_sec": hvdkit_rates}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
