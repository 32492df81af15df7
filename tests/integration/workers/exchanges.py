"""ZeRO-1 and PowerSGD exchanges against plain data parallelism, both frameworks in one
Horovod job. Rank 0 writes results.json: differences, byte counts, accuracies.

    horovodrun -np 2 python exchanges.py --out DIR [--frameworks torch,tensorflow]
        [--convergence] [--trainer]

Plain data parallelism here is the textbook step: grouped allreduce (average) of the
gradients, then the whole optimizer's step on every rank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit.data import build_dataset
from hvdkit.recipe import DataConfig, ModelConfig, OptimizerConfig
from hvdkit.runtime.rank import run_worker

STEPS = 6
BATCH = 16  # per rank


def data():
    return build_dataset(DataConfig("digits"), seed=0)


def batches(ds, rank: int, size: int, batch: int, steps: int, epochs: int = 0):
    """This rank's slice of each global batch: the first `steps`, or `epochs` shuffled epochs."""
    n = len(ds.y_train) // (batch * size) * batch * size
    orders = [np.arange(n)] if not epochs else \
        [np.random.default_rng(e).permutation(len(ds.y_train))[:n] for e in range(epochs)]
    for order in orders:
        for s in range(n // (batch * size)):
            if not epochs and s == steps:
                return
            idx = order[s * batch * size:(s + 1) * batch * size][rank * batch:(rank + 1) * batch]
            yield ds.x_train[idx], ds.y_train[idx]


class TorchSide:
    def __init__(self) -> None:
        import horovod.torch as hvd
        import torch

        self.torch, self.hvd = torch, hvd
        hvd.init()
        torch.set_num_threads(1)
        self.rank, self.size = hvd.rank(), hvd.size()

    def model(self, hidden: list[int]):
        from hvdkit.adapters.torch.models import MODELS

        self.torch.manual_seed(0)
        return MODELS.get("mlp")(ModelConfig("mlp", hidden), (8, 8, 1), 10)

    def run(self, kind: str, opt: OptimizerConfig, feed, hidden=(32,), accumulation: int = 1,
            state: dict | None = None, params: list | None = None, **options):
        """Train from `params` (or the seeded initial ones) and the optimizer `state`;
        returns (parameters, exchange or optimizer, model)."""
        from hvdkit.adapters.torch.adapter import make_optimizer
        from hvdkit.adapters.torch.powersgd import PowerSGDExchange
        from hvdkit.adapters.torch.zero import ZeroExchange

        torch, hvd = self.torch, self.hvd
        model = self.model(list(hidden))
        with torch.no_grad():
            for p, value in zip(model.parameters(), params or [], strict=False):
                p.copy_(torch.from_numpy(value))
        optimizer = make_optimizer(opt, model.parameters())
        exchange = None
        if kind == "zero":
            exchange = ZeroExchange(model.parameters(), optimizer, hvd, **options)
        elif kind == "powersgd":
            exchange = PowerSGDExchange(model.parameters(), optimizer, hvd, **options)
        if state is not None:
            (exchange or optimizer).load_state_dict(state)
        for x, y in feed:
            for p in model.parameters():
                p.grad = None
            for xb, yb in zip(np.array_split(x, accumulation), np.array_split(y, accumulation),
                              strict=True):
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(xb)),
                                                         torch.from_numpy(yb))
                (loss / accumulation).backward()
            if exchange is not None:
                exchange.step(opt.lr)
            else:
                params = list(model.parameters())
                compression = hvd.Compression.fp16 if options.get("compression") == "fp16" \
                    else hvd.Compression.none
                with torch.no_grad():
                    reduced = hvd.grouped_allreduce([p.grad for p in params],
                                                    compression=compression)
                    for p, g in zip(params, reduced, strict=True):
                        p.grad.copy_(g)
                optimizer.step()
        return [p.detach().numpy().copy() for p in model.parameters()], exchange or optimizer, \
            model

    def state_bytes(self, optimizer) -> int:
        from hvdkit.adapters.torch.zero import optimizer_state_bytes

        return optimizer_state_bytes(optimizer)

    def flat_state(self, state: dict) -> list[np.ndarray]:
        return [np.asarray(v, np.float32).ravel() for i in sorted(state["state"])
                for _, v in sorted(state["state"][i].items())]

    def accuracy(self, model, ds) -> float:
        with self.torch.no_grad():
            logits = model(self.torch.from_numpy(ds.x_test))
        return float((logits.argmax(1).numpy() == ds.y_test).mean())

    def allgather(self, values: np.ndarray) -> np.ndarray:
        return self.hvd.allgather(self.torch.from_numpy(values[None])).numpy()


class TensorFlowSide:
    def __init__(self) -> None:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        self.tf, self.hvd = tf, hvd
        # The Trainer's adapter sets the same later (train.threads 1): TF refuses a change.
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        hvd.init()
        self.rank, self.size = hvd.rank(), hvd.size()

    def run(self, kind: str, opt: OptimizerConfig, feed, hidden=(32,), accumulation: int = 1,
            state: list | None = None, params: list | None = None, **options):
        import keras

        from hvdkit.adapters.tensorflow.adapter import make_optimizer
        from hvdkit.adapters.tensorflow.models import MODELS
        from hvdkit.adapters.tensorflow.powersgd import PowerSGDExchange
        from hvdkit.adapters.tensorflow.zero import ZeroExchange

        tf, hvd = self.tf, self.hvd
        keras.utils.set_random_seed(0)
        model = MODELS.get("mlp")(ModelConfig("mlp", list(hidden)), (8, 8, 1), 10)
        variables = model.trainable_variables
        for v, value in zip(variables, params or [], strict=False):
            v.assign(value)
        optimizer = make_optimizer(opt)
        exchange = None
        if kind == "zero":
            exchange = ZeroExchange(variables, optimizer, hvd, **options)
        elif kind == "powersgd":
            exchange = PowerSGDExchange(variables, optimizer, hvd, **options)
        if kind != "zero":
            optimizer.build(variables)
        if state is not None:
            if exchange is not None and kind == "zero":
                exchange.load_state_dict(state)
            else:
                for v, value in zip(optimizer.variables, state, strict=True):
                    v.assign(value)
        compression = hvd.Compression.fp16 if options.get("compression") == "fp16" \
            else hvd.Compression.none

        @tf.function(autograph=False)
        def grads(x, y):
            total = [tf.zeros_like(v) for v in variables]
            n = tf.shape(x)[0]
            for i in range(accumulation):
                xb, yb = x[n * i // accumulation:n * (i + 1) // accumulation], \
                    y[n * i // accumulation:n * (i + 1) // accumulation]
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=yb, logits=model(xb, training=True))) / accumulation
                total = [t + g for t, g in zip(total, tape.gradient(loss, variables),
                                               strict=True)]
            return total

        @tf.function(autograph=False)
        def plain(gs, lr):
            optimizer.learning_rate.assign(lr)
            reduced = hvd.grouped_allreduce(gs, compression=compression)
            optimizer.apply_gradients(zip(reduced, variables, strict=True))

        for x, y in feed:
            gs = grads(x, y)
            if exchange is not None:
                exchange.step(gs, opt.lr)
            else:
                plain(gs, tf.constant(opt.lr, tf.float32))
        return [v.numpy() for v in variables], exchange or optimizer, model

    def state_bytes(self, optimizer) -> int:
        from hvdkit.adapters.tensorflow.zero import optimizer_state_bytes

        return optimizer_state_bytes(optimizer)

    def flat_state(self, state) -> list[np.ndarray]:
        if not isinstance(state, list):  # a Keras optimizer
            state = [v.numpy() for v in state.variables]
        return [np.asarray(v, np.float32).ravel() for v in state]

    def accuracy(self, model, ds) -> float:
        logits = model(ds.x_test, training=False).numpy()
        return float((logits.argmax(1) == ds.y_test).mean())

    def allgather(self, values: np.ndarray) -> np.ndarray:
        return self.hvd.allgather(self.tf.constant(values[None])).numpy()


def diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def check(side, ds, results: dict, convergence: bool) -> None:
    sgd = OptimizerConfig("sgd", lr=0.1, momentum=0.5)
    adam = OptimizerConfig("adam", lr=0.01)

    def feed(steps=STEPS, batch=BATCH):
        return batches(ds, side.rank, side.size, batch, steps)

    for name, opt, extra in (("sgd", sgd, {}), ("adam", adam, {}),
                             ("accumulate", adam, {"accumulation": 2}),
                             ("buckets", adam, {"bucket_bytes": 4096})):
        plain, plain_opt, _ = side.run("plain", opt, feed(), **{k: v for k, v in extra.items()
                                                              if k == "accumulation"})
        zero, exchange, _ = side.run("zero", opt, feed(), **extra)
        results[f"zero_{name}"] = diff(plain, zero)
        if name == "adam":
            results["state_bytes_plain"] = side.state_bytes(plain_opt)
            results["state_bytes_zero"] = exchange.state_bytes()
            full = exchange.state_dict()  # a collective: every rank
            results["zero_gathered_state"] = diff(side.flat_state(full),
                                                  side.flat_state(plain_opt.state_dict()
                                                                  if side.__class__ is TorchSide
                                                                  else plain_opt))
            # Resume: ZeRO-1 from the gathered state and plain from its own go on alike.
            later = list(batches(ds, side.rank, side.size, BATCH, 2 * STEPS))[STEPS:]
            a, _, _ = side.run("plain", adam, iter(list(feed()) + later))
            b, _, _ = side.run("zero", adam, iter(later), state=full, params=zero)
            results["zero_resume"] = diff(a, b)
        mine = np.concatenate([p.ravel() for p in zero])
        results[f"zero_{name}_ranks_agree"] = float(np.ptp(side.allgather(mine), axis=0).max())
        results[f"zero_{name}_buckets"] = len(exchange.plan.buckets)

    plain, _, _ = side.run("plain", adam, feed(), compression="fp16")
    zero, _, _ = side.run("zero", adam, feed(), compression="fp16")
    results["zero_fp16_vs_plain_fp16"] = diff(plain, zero)
    plain32, _, _ = side.run("plain", adam, feed())
    results["zero_fp16_vs_plain"] = diff(plain32, zero)

    # PowerSGD with the full rank is exact: it must equal plain data parallelism (with SGD:
    # Adam would turn rounding noise on zero gradients into whole steps).
    plain, _, _ = side.run("plain", sgd, feed())
    full_rank, _, _ = side.run("powersgd", sgd, feed(), rank=64, warmup_steps=2,
                                  min_compression=0)
    results["powersgd_full_rank"] = diff(plain, full_rank)

    if convergence:
        digits = OptimizerConfig("adam", lr=0.002)
        for name, kind, options in (("none", "plain", {}),
                                    ("powersgd", "powersgd", {"rank": 2, "warmup_steps": 10})):
            _, exchange, model = side.run(kind, digits, batches(ds, side.rank, side.size, 32, 0,
                                                                epochs=20),
                                          hidden=(128, 64), **options)
            results[f"accuracy_{name}"] = side.accuracy(model, ds)
            if kind == "powersgd":
                results["powersgd_bytes"] = exchange.bytes_per_step()
                results["powersgd_uncompressed_bytes"] = exchange.plan.bytes_per_step(False)


def trainer_recipe(sync: str, steps: int, parallel: dict | None = None, **train):
    from hvdkit import recipe_from_dict

    return recipe_from_dict({
        "name": "zero-check", "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"}, "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"batch_size": BATCH, "max_steps": steps, "log_every_steps": 3, "threads": 1,
                  **train},
        "parallel": {"sync": sync, **(parallel or {})},
    })


# Compressed from step 3 on, so that the checkpoint at step 6 holds errors and warm Q's.
POWERSGD = {"compression": "powersgd", "powersgd_rank": 2, "powersgd_warmup_steps": 3}


def trainer_checks(framework: str, out: Path, results: dict, rank: int) -> None:
    """Through the Trainer: zero1 equals the ring; a checkpoint resumes exactly; its file holds
    the whole optimizer state (a later np=1 process resumes it: tests/integration)."""
    from hvdkit import Trainer

    def fit(r, **kw) -> tuple[list[np.ndarray], dict]:
        trainer = Trainer(r, framework, progress=False, **kw)
        summary = trainer.fit()
        return trainer.adapter.parameters_as_numpy(), summary

    whole, summary = fit(trainer_recipe("zero1", 2 * STEPS))
    ring, ring_summary = fit(trainer_recipe("allreduce", 2 * STEPS))
    results["trainer_zero_vs_ring"] = diff(whole, ring)
    results["trainer_state_bytes"] = [summary["exchange"]["optimizer_state_bytes"],
                                      ring_summary["exchange"]["optimizer_state_bytes"]]
    for sync in ("zero1", "allreduce"):
        fit(trainer_recipe(sync, STEPS), run_dir=out / f"ckpt-{framework}-{sync}")
    resumed, _ = fit(trainer_recipe("zero1", 2 * STEPS), run_dir=out / "resumed",
                     resume=out / f"ckpt-{framework}-zero1")
    results["trainer_resume"] = diff(whole, resumed)
    powersgd_resume(fit, framework, out, results, rank)


def powersgd_resume(fit, framework: str, out: Path, results: dict, rank: int) -> None:
    """PowerSGD stopped at step 6 and resumed ends where the uninterrupted run ends: the
    checkpoint holds the step count, the warm Q's and every rank's errors. Resumed from the
    same checkpoint without that state, it ends elsewhere (the measure of what it holds)."""
    from hvdkit.training.checkpoint import list_checkpoints, load, save

    whole, _ = fit(trainer_recipe("allreduce", 2 * STEPS, POWERSGD))
    first = out / f"ckpt-{framework}-powersgd"
    fit(trainer_recipe("allreduce", STEPS, POWERSGD), run_dir=first)
    resumed, _ = fit(trainer_recipe("allreduce", 2 * STEPS, POWERSGD),
                     run_dir=out / f"resumed-{framework}-powersgd", resume=first)
    results["powersgd_resume"] = diff(whole, resumed)
    bare = out / f"ckpt-{framework}-powersgd-bare"
    if rank == 0:  # rank 0 alone reads checkpoints (in the broadcast that rank 1 waits in)
        payload = load(list_checkpoints(first / "checkpoints")[-1])
        state = payload["state"]["powersgd"]
        results["powersgd_saved"] = {"steps": int(state["steps"]),
                                     "qs": [list(np.shape(q)) for q in state["qs"]],
                                     "errors": [list(np.shape(e)) for e in state["errors"]],
                                     "error_norm": float(sum(np.abs(e).sum()
                                                             for e in state["errors"]))}
        del payload["state"]["powersgd"]  # as a checkpoint without the compressor's state
        save(bare / "checkpoints", STEPS, payload)
    lost, _ = fit(trainer_recipe("allreduce", 2 * STEPS, POWERSGD),
                  run_dir=out / f"lost-{framework}-powersgd", resume=bare)
    results["powersgd_resume_without_state"] = diff(whole, lost)


def flat_optimizer_state(value) -> list[np.ndarray]:
    """Every array in a saved optimizer state, in a stable order (either framework)."""
    if isinstance(value, dict):
        return [a for k in sorted(value, key=str) for a in flat_optimizer_state(value[k])]
    if isinstance(value, list | tuple):
        return [a for v in value for a in flat_optimizer_state(v)]
    return [np.asarray(value, np.float64).ravel()] if isinstance(value, np.ndarray) else []


def resume_at_one(framework: str, out: Path, results: dict) -> None:
    """One process resumes the 2-rank ZeRO-1 checkpoint: its optimizer holds what the 2-rank
    ring's checkpoint holds (the whole state), and it trains on."""
    from hvdkit import Trainer
    from hvdkit.training.checkpoint import list_checkpoints, load

    trainer = Trainer(trainer_recipe("zero1", STEPS), framework, progress=False,
                      resume=out / f"ckpt-{framework}-zero1")
    trainer.fit()  # nothing left to train: the optimizer holds what was loaded
    ring = load(list_checkpoints(out / f"ckpt-{framework}-allreduce" / "checkpoints")[-1])
    results["one_rank_state"] = diff(flat_optimizer_state(trainer.adapter.state()["optimizer"]),
                                     flat_optimizer_state(ring["state"]["optimizer"]))
    more = Trainer(trainer_recipe("zero1", STEPS + 3), framework, progress=False,
                   resume=out / f"ckpt-{framework}-zero1").fit()
    results["one_rank_loss"] = more["test_loss"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frameworks", default="torch,tensorflow")
    parser.add_argument("--convergence", action="store_true")
    parser.add_argument("--trainer", action="store_true")
    parser.add_argument("--resume-at-one", action="store_true",
                        help="one process: resume the --trainer job's ZeRO-1 checkpoints")
    args = parser.parse_args()
    ds = data()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    if args.resume_at_one:
        for framework in args.frameworks.split(","):
            resume_at_one(framework, args.out, results.setdefault(framework, {}))
        (args.out / "one.json").write_text(json.dumps(results, indent=1))
        return 0
    for framework in args.frameworks.split(","):
        side = TorchSide() if framework == "torch" else TensorFlowSide()
        results[framework] = {}
        check(side, ds, results[framework], args.convergence)
        if args.trainer:
            trainer_checks(framework, args.out, results[framework], side.rank)
    if side.rank == 0:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
