"""Checkpoint scenarios that share one Horovod job (run on every rank):

1. an uninterrupted run;
2. the same run stopped after step STOP_AT (every rank raises), checkpoints every 5 steps;
3. resumed from the newest checkpoint: must end bit for bit equal to 1;
4. the newest checkpoint truncated: resume falls back to the previous one, again equal to 1;
5. a recipe with another learning rate: resuming is refused, the reason is named;
6. uneven data: rank 1 gets fewer batches each epoch, training still finishes (hvd.join).

    horovodrun -np 2 python resume.py --framework torch --out DIR

Rank 0 writes DIR/results.json; the test reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from stopping import Stop, StopAfter  # this folder: the script's own

from hvdkit import Trainer, recipe_from_dict
from hvdkit.data import ShardedLoader
from hvdkit.runtime.rank import run_worker
from hvdkit.training.checkpoint import CheckpointError, list_checkpoints

STOP_AT = 17  # steps; checkpoints at 5, 10, 15, so resuming repeats 2 steps


def recipe(lr: float = 0.003, epochs: int = 2, weight_decay: float = 0.0):
    return recipe_from_dict({
        "name": "resume-check",
        "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"},
        "optimizer": {"name": "adam", "lr": lr, "schedule": "cosine",
                      "weight_decay": weight_decay},
        "train": {"batch_size": 32, "epochs": epochs, "log_every_steps": 4,
                  "checkpoint_every_steps": 5, "keep_checkpoints": 3},
    })


class UnevenLoader(ShardedLoader):
    """Rank 1 skips the last 3 batches of every epoch."""

    even = False

    def batches(self, epoch: int, start_step: int = 0, start_sample: int = 0,
                stage=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        batches = list(super().batches(epoch, start_step, start_sample, stage))
        yield from batches[: len(batches) - 3] if self.rank == 1 else batches


def params(trainer: Trainer) -> list[np.ndarray]:
    return trainer.adapter.parameters_as_numpy()


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def uneven(framework: str) -> dict:
    # TensorFlow: one epoch, one join. With Horovod 0.28.1 a second hvd.join in a TF job
    # returns at once on the rank that joined first (see README, "Uneven data").
    epochs = 2 if framework == "torch" else 1
    trainer = Trainer(recipe(epochs=epochs), framework, progress=False, run_dir=None)
    original = trainer.train_from_position

    def train_from_position() -> None:
        old = trainer.loader
        trainer.loader = UnevenLoader(old.samples, batch_size=old.batch_size, rank=old.rank,
                                      size=old.size, seed=old.seed, drop_last=old.drop_last,
                                      prefetch=old.prefetch)
        original()

    trainer.train_from_position = train_from_position  # type: ignore[method-assign]
    summary = trainer.fit()
    return {"epochs": epochs, "steps": summary["steps"],
            "test_accuracy": summary["test_accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fw, out = args.framework, Path(args.out)
    results: dict = {}

    full = Trainer(recipe(), fw, progress=False, run_dir=None)
    full_summary = full.fit()
    reference = params(full)
    results["full_steps"] = full_summary["steps"]

    print("[resume-check] next: run", file=sys.stderr, flush=True)
    run = out / "run"
    with contextlib.suppress(Stop):
        Trainer(recipe(), fw, progress=False, run_dir=run, callbacks=[StopAfter(STOP_AT)]).fit()
    saved = list_checkpoints(run / "checkpoints")
    results["after_stop"] = [p.name for p in saved]

    print("[resume-check] next: resumed", file=sys.stderr, flush=True)
    resumed = Trainer(recipe(), fw, progress=False, run_dir=run, resume="latest")
    resumed.fit()  # writes a final checkpoint at the last step too
    results["resumed_equal"] = same(params(resumed), reference)

    newest = list_checkpoints(run / "checkpoints")[-1]
    if resumed.world is not None and resumed.world.is_root:
        data = newest.read_bytes()
        newest.write_bytes(data[: len(data) // 2])  # a truncated write
    resumed.adapter.allreduce(np.zeros(1))  # every rank waits for the damage
    print("[resume-check] next: fallback", file=sys.stderr, flush=True)
    fallback = Trainer(recipe(), fw, progress=False, run_dir=out / "fallback",
                       resume=run / "checkpoints")
    fallback.fit()
    results["fallback_equal"] = same(params(fallback), reference)

    print("[resume-check] next: try", file=sys.stderr, flush=True)
    try:
        Trainer(recipe(weight_decay=0.01), fw, progress=False, run_dir=None, resume=run).fit()
        results["mismatch_error"] = None
    except CheckpointError as exc:
        results["mismatch_error"] = str(exc)

    print("[resume-check] next: uneven", file=sys.stderr, flush=True)
    results["uneven"] = uneven(fw)
    if full.world is not None and full.world.is_root:
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
