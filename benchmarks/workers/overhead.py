"""Runs inside a 2-rank Horovod job: hvdkit's Trainer against a hand-written Horovod loop on the
same model, data, optimizer, batch and threads, alternating so both see the same machine load.
Rank 0 prints one JSON line with the steps/s of each round of each.

The hand-written loops (steploop.py) are the limit: the data set resident as one tensor per rank,
each batch sliced out of it inside the step. TensorFlow's reduces all gradients in one grouped
allreduce (`num_groups=1`), as hvdkit does.

    horovodrun -np 2 python benchmarks/workers/overhead.py --framework torch
    horovodrun -np 2 python benchmarks/workers/overhead.py --framework tensorflow \\
        --recipe recipes/gpt_text.yaml --set train.batch_size=16
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from steploop import classes, resident_shard, steps_per_second, torch_step

from hvdkit import Trainer, load_recipe
from hvdkit.callbacks import Callback
from hvdkit.worker import rank_from_env, run_worker

RECIPE = "recipes/synthetic_cnn.yaml"
LOG_EVERY = 5  # the trainer's metrics flush: the step timer reads the clock there


class StepTimer(Callback):
    """Wall time from the end of step `warmup` to the end of the last step (evaluation left out).

    Callbacks see steps when the trainer flushes metrics (every log_every_steps), so `warmup`
    and the step count are multiples of it: the clock reads right after those steps end.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total, self.start, self.end = warmup, total, 0.0, 0.0

    def on_step_end(self, step, logs):
        if step + 1 == self.warmup:
            self.start = time.perf_counter()
        if step + 1 == self.total:
            self.end = time.perf_counter()

    def rate(self) -> float:
        return (self.total - self.warmup) / (self.end - self.start)


def hvdkit_rate(framework: str, recipe, warmup: int) -> float:
    timer = StepTimer(warmup, recipe.train.max_steps)
    Trainer(recipe, framework, callbacks=[timer], progress=False).fit()
    return timer.rate()


def raw_torch_rate(recipe, steps: int, warmup: int) -> float:
    import horovod.torch as hvd
    import torch

    from hvdkit.adapters.torch.models import MODELS

    hvd.init()
    torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.train.seed)
    x, y, data = resident_shard(recipe, hvd.rank(), hvd.size())
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = MODELS.get(recipe.model.name)(recipe.model, tuple(x.shape[1:]), classes(data))
    o = recipe.optimizer
    opt = (torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                           weight_decay=o.weight_decay) if o.name == "sgd" else
           torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay))
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    b = recipe.train.batch_size
    return steps_per_second(torch_step(model, opt, x, y, b), len(y) // b, steps, warmup)


def raw_tensorflow_rate(recipe, steps: int, warmup: int) -> float:
    import horovod.tensorflow as hvd
    import keras
    import tensorflow as tf

    from hvdkit.adapters.tensorflow.models import MODELS

    hvd.init()
    keras.utils.set_random_seed(recipe.train.seed)
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
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=yb, logits=model(xb, training=True)))
        tape = hvd.DistributedGradientTape(tape, num_groups=1)  # one grouped allreduce
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return steps_per_second(lambda i: step(tf.constant(i)), len(ys) // b, steps, warmup)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    # Evaluation only after the last step: the window compares training steps alone.
    recipe = load_recipe(args.recipe, [*args.overrides, "train.threads=1", "train.epochs=100",
                                       "train.eval_every_epochs=100",
                                       f"train.log_every_steps={LOG_EVERY}",
                                       f"train.max_steps={args.steps}"])
    if args.framework == "torch":
        import torch
        torch.set_num_threads(1)
    else:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    raw = raw_torch_rate if args.framework == "torch" else raw_tensorflow_rate
    rates: dict[str, list[float]] = {"raw": [], "hvdkit": []}
    # Round 0 warms caches and clocks for both and is not kept.
    for round_ in range(args.rounds + 1):
        raw_rate = raw(recipe, args.steps, args.warmup)
        ours = hvdkit_rate(args.framework, recipe, args.warmup)
        if round_:
            rates["raw"].append(raw_rate)
            rates["hvdkit"].append(ours)
    if rank_from_env() == 0:
        print(json.dumps({"framework": args.framework, "recipe": args.recipe,
                          "batch_per_rank": recipe.train.batch_size,
                          "raw_steps_per_sec": rates["raw"],
                          "hvdkit_steps_per_sec": rates["hvdkit"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
