"""The run's record: the callbacks that write it on rank 0, config.yaml (its resolved
settings) and the summary (summary.json, the value `Trainer.fit()` returns): what a reader of
the run wants without replaying metrics.jsonl. Kept out of the loop's module so it stays short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import yaml

from hvdkit.data import peak_rss_mib
from hvdkit.models.tasks import TEST_METRICS
from hvdkit.runtime.world import World
from hvdkit.training.callbacks import Callback, Logs, MetricsWriter, ProgressBar
from hvdkit.training.inputmeter import input_summary
from hvdkit.training.tensorboard import TensorBoard


def run_summary(trainer: Any, history: list[Logs], wall_time: float,
                test_metrics: Iterable[str]) -> dict[str, Any]:
    """The headline numbers of `trainer`'s run (set up, trained): recipe, ranks, steps
    reached, throughput and the last epoch's test metrics named in `test_metrics`."""
    world = trainer.world
    rates = [h["samples_per_sec"] for h in history]
    summary: dict[str, Any] = {
        "recipe": trainer.recipe.name,
        "framework": trainer.framework,
        "np": world.size,
        "threads_per_rank": trainer.adapter.threads,
        "device": trainer.adapter.device,
        "epochs": len(history),
        "steps": trainer.position.step,
        "global_batch": trainer.loader.global_batch,
        "train_loss": history[-1]["train_loss"] if history else None,
        # The first epoch carries warm-up (graph tracing, allocations): report the rest.
        "samples_per_sec": float(np.median(rates[1:] or rates)) if rates else 0.0,
        "wall_time": wall_time,
    }
    for key in test_metrics:
        if history and key in history[-1]:
            summary[key] = history[-1][key]
    if trainer.run_dir is not None:
        summary["run_dir"] = str(trainer.run_dir)
    return summary


def fit_summary(trainer: Any, wall_time: float, timed: dict[str, Any]) -> dict[str, Any]:
    """summary.json: `run_summary` of `trainer`'s finished run (every rank, collectively: it
    allreduces), with the barrier-timed throughput `timed`, the model's size, the exchange,
    the samples, the ranks' memory, the compile time and the input path."""
    history, world = trainer.history, trainer.world
    summary = run_summary(trainer, history, wall_time, TEST_METRICS)
    summary["timed"] = timed  # barrier-timed throughput over all ranks (hvdkit.training.timing)
    tensors = [int(p.size) for p in trainer.adapter.parameters_as_numpy()]  # forward order
    summary["parameters"] = sum(tensors)
    summary["parameter_tensors"] = tensors
    summary["exchange"] = trainer.runner.report()
    if history and "pipeline" in history[-1]:
        summary["pipeline"] = history[-1]["pipeline"]
    # Global samples: taken by the final position, and computed (a reset repeats some).
    summary["samples_seen"] = trainer.position.samples_seen
    summary["samples_trained"] = trainer.samples_trained
    summary["elastic_resets"] = trainer.elastic_resets
    summary["peak_rss_mib"] = peak_rss_per_rank(trainer.adapter.allreduce, world)
    if trainer.recipe.train.compile:  # the first step's wall time, which compiles the model
        summary["compile_seconds"] = trainer.first_step_seconds
    summary["input"] = input_summary(trainer)
    if trainer.stop.signum:
        summary["interrupted"] = trainer.stop.signum
    return summary


def peak_rss_per_rank(allreduce: Callable[..., np.ndarray], world: World) -> list[float]:
    """Each rank's peak resident memory in MiB, in rank order (one allreduce, named: ranks
    with uneven data have made different numbers of calls)."""
    mine = np.zeros(world.size)
    mine[world.rank] = peak_rss_mib()
    return [round(float(v), 1) for v in allreduce(mine, op="sum", name="hvdkit.rss")]


def write_config(trainer: Any) -> None:
    """The run's resolved settings, <run>/config.yaml (rank 0, at the start)."""
    assert trainer.run_dir is not None and trainer.world is not None
    resolved = {
        "recipe": trainer.recipe.to_dict(),
        "framework": trainer.framework,
        "recipe_folder": trainer.recipe.folder,  # where builders are found (hvdkit export)
        "world": {"size": trainer.world.size, "local_size": trainer.world.local_size},
        "threads_per_rank": trainer.adapter.threads,
        "device": trainer.adapter.device,
        "host_allocator": trainer.host_allocator,
        "layout": {"stages": trainer.layout.stages, "replicas": trainer.layout.replicas,
                   "sync": trainer.layout.sync, "compression": trainer.layout.compression},
        "launch": trainer.launch_info,
    }
    (trainer.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    class_names = getattr(trainer.data, "class_names", None)
    if class_names is not None:  # an image folder's: label i is the i-th; export carries it
        (trainer.run_dir / "classes.json").write_text(json.dumps(class_names) + "\n")


def make_callbacks(trainer: Any) -> list[Callback]:
    """The run's callbacks: on rank 0 its files (config.yaml, metrics.jsonl, TensorBoard) and
    progress, then the user's on every rank."""
    callbacks: list[Callback] = []
    if trainer.world is not None and trainer.world.is_root:
        if trainer.run_dir is not None:
            trainer.run_dir.mkdir(parents=True, exist_ok=True)
            write_config(trainer)
            callbacks.append(MetricsWriter(trainer.run_dir / "metrics.jsonl"))
            if trainer.tensorboard:
                callbacks.append(TensorBoard(trainer.run_dir / "tensorboard", {
                    "recipe": trainer.recipe.to_dict(), "framework": trainer.framework,
                    "np": trainer.world.size}))
        if trainer.progress:
            callbacks.append(ProgressBar())
    return callbacks + trainer.user_callbacks
