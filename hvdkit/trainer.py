"""The one training loop, written once for every framework.

    recipe → adapter.init (ranks, threads) → data shard → adapter.train_step per batch
    → metrics averaged across ranks every `log_every_steps` → callbacks → evaluation

It never imports a framework: the adapter does the framework's work, and every array that
passes between them is numpy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hvdkit.adapters.base import Adapter, get_adapter
from hvdkit.callbacks import Callback, Logs, MetricsWriter, ProgressBar
from hvdkit.data import ShardedLoader, build_dataset, eval_shard
from hvdkit.errors import UserError
from hvdkit.recipe import Recipe
from hvdkit.schedule import learning_rate
from hvdkit.world import World

EVAL_BATCH = 512
STEP_METRICS = ("loss", "accuracy", "step_time")


def default_run_dir(recipe: Recipe, framework: str, np_: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name}-{framework}-np{np_}-{stamp}"


class Trainer:
    """Trains `recipe` with one framework's adapter; `fit()` returns the run's summary.

    `model` may be the user's own model (an `nn.Module` or a `keras.Model`) or a callable
    `(input_shape, num_classes) -> model`, called after Horovod starts; the recipe's model
    section is then ignored. Rank 0 writes the run's files to `run_dir`: a folder, "auto"
    for runs/<recipe>-<framework>-np<N>-<time>, or None for no files.
    """

    def __init__(
        self,
        recipe: Recipe,
        framework: str = "torch",
        *,
        model: Any = None,
        callbacks: Sequence[Callback] = (),
        run_dir: str | Path | None = None,
        progress: bool = True,
        launch_info: dict[str, Any] | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        self.recipe = recipe
        self.framework = framework
        self.adapter = adapter or get_adapter(framework)
        self.model = model
        self.user_callbacks = list(callbacks)
        self.run_dir = None if run_dir in (None, "auto") else Path(run_dir)
        self._auto_run_dir = run_dir == "auto"
        self.progress = progress
        self.launch_info = launch_info or {}
        self.world: World | None = None

    # -- set-up ---------------------------------------------------------------------------

    def _setup(self) -> None:
        recipe = self.recipe
        self.world = world = self.adapter.init(recipe.train.threads)
        if self._auto_run_dir:
            self.run_dir = default_run_dir(recipe, self.framework, world.size)
        self.data = build_dataset(recipe.data, recipe.train.seed)
        per_step = recipe.train.batch_size * recipe.parallel.accumulation
        self.loader = ShardedLoader(
            self.data.x_train, self.data.y_train, batch_size=per_step,
            rank=world.data_rank, size=world.data_size, seed=recipe.train.seed,
            drop_last=recipe.data.drop_last,
        )
        if self.loader.steps_per_epoch == 0:
            raise UserError(
                f"train.batch_size x parallel.accumulation x ranks = {self.loader.global_batch} "
                f"is larger than the {len(self.data.x_train)} training samples"
            )
        per_epoch = self.loader.steps_per_epoch
        self.total_steps = per_epoch * recipe.train.epochs
        if recipe.train.max_steps:
            self.total_steps = min(self.total_steps, recipe.train.max_steps)
        self.adapter.build(recipe, self.data.input_shape, self.data.num_classes, model=self.model)
        self.adapter.broadcast_state(root_rank=0)
        self.callbacks = self._make_callbacks()

    def _make_callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = []
        if self.world is not None and self.world.is_root:
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._write_config()
                callbacks.append(MetricsWriter(self.run_dir / "metrics.jsonl"))
            if self.progress:
                callbacks.append(ProgressBar())
        return callbacks + self.user_callbacks

    def _write_config(self) -> None:
        assert self.run_dir is not None and self.world is not None
        resolved = {
            "recipe": self.recipe.to_dict(),
            "framework": self.framework,
            "world": {"size": self.world.size, "local_size": self.world.local_size},
            "threads_per_rank": self.adapter.threads,
            "launch": self.launch_info,
        }
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # -- the loop -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        self._setup()
        recipe, world, loader = self.recipe, self.world, self.loader
        assert world is not None
        samples_per_step = loader.global_batch
        self._emit("on_train_begin", {"total_steps": self.total_steps,
                                      "epochs": recipe.train.epochs, "world_size": world.size})
        started = time.perf_counter()
        step, history = 0, []
        for epoch in range(recipe.train.epochs):
            if step >= self.total_steps:
                break
            self._emit("on_epoch_begin", epoch, {})
            epoch_started = time.perf_counter()
            pending: list[list[float]] = []
            pending_lr: list[float] = []
            losses: list[float] = []
            for x, y in loader.batches(epoch):
                lr = learning_rate(recipe.optimizer, step, loader.steps_per_epoch,
                                   self.total_steps, world.data_size)
                t0 = time.perf_counter()
                metrics = self.adapter.train_step(x, y, lr)
                pending.append([metrics["loss"], metrics["accuracy"], time.perf_counter() - t0])
                pending_lr.append(lr)
                step += 1
                last = step >= self.total_steps or step % loader.steps_per_epoch == 0
                if len(pending) >= recipe.train.log_every_steps or last:
                    losses += self._flush(pending, pending_lr, step, epoch, samples_per_step)
                    pending, pending_lr = [], []
                if step >= self.total_steps:
                    break
            train_time = time.perf_counter() - epoch_started
            logs: Logs = {
                "train_loss": float(np.mean(losses)),
                "epoch_time": train_time,
                "samples_per_sec": len(losses) * samples_per_step / train_time,
                "step": step,
            }
            final = step >= self.total_steps or epoch == recipe.train.epochs - 1
            if final or (epoch + 1) % recipe.train.eval_every_epochs == 0:
                logs.update(self.evaluate())
            history.append(logs)
            self._emit("on_epoch_end", epoch, logs)
        summary = self._summary(history, step, time.perf_counter() - started)
        self._emit("on_train_end", summary)
        if world.is_root and self.run_dir is not None:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _flush(self, rows: list[list[float]], lrs: list[float], step: int, epoch: int,
               samples_per_step: int) -> list[float]:
        """Average the buffered step metrics across ranks in one allreduce, then log them."""
        averaged = self.adapter.allreduce(np.asarray(rows, dtype=np.float64), op="average")
        first = step - len(rows)
        for i, (row, lr) in enumerate(zip(averaged, lrs, strict=True)):
            logs = dict(zip(STEP_METRICS, map(float, row), strict=True))
            logs.update(epoch=epoch, lr=lr, samples_per_sec=samples_per_step / logs["step_time"])
            self._emit("on_step_end", first + i, logs)
        return [float(r[0]) for r in averaged]

    def evaluate(self) -> dict[str, float]:
        """Test loss and accuracy over the whole test set, each rank taking a share."""
        assert self.world is not None
        x, y = self.data.x_test, self.data.y_test
        mine = eval_shard(len(x), self.world.data_rank, self.world.data_size)
        sums = np.zeros(3)
        for start in range(0, len(mine), EVAL_BATCH):
            idx = mine[start : start + EVAL_BATCH]
            out = self.adapter.eval_step(x[idx], y[idx])
            sums += (out["loss_sum"], out["correct"], out["count"])
        loss_sum, correct, count = self.adapter.allreduce(sums, op="sum")
        return {"test_loss": float(loss_sum / count), "test_accuracy": float(correct / count)}

    def _summary(self, history: list[Logs], steps: int, wall_time: float) -> dict[str, Any]:
        assert self.world is not None
        rates = [h["samples_per_sec"] for h in history]
        summary: dict[str, Any] = {
            "recipe": self.recipe.name,
            "framework": self.framework,
            "np": self.world.size,
            "threads_per_rank": self.adapter.threads,
            "epochs": len(history),
            "steps": steps,
            "global_batch": self.loader.global_batch,
            "train_loss": history[-1]["train_loss"] if history else None,
            # The first epoch carries warm-up (graph tracing, allocations): report the rest.
            "samples_per_sec": float(np.median(rates[1:] or rates)) if rates else 0.0,
            "wall_time": wall_time,
        }
        for key in ("test_loss", "test_accuracy"):
            if history and key in history[-1]:
                summary[key] = history[-1][key]
        if self.run_dir is not None:
            summary["run_dir"] = str(self.run_dir)
        return summary
