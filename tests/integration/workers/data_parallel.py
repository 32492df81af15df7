"""Data-parallel checks that share one Horovod job: equivalence, accumulation, fp16, broadcast,
sharding and convergence. Rank 0 saves parameters as npz files; tests compare them.

    horovodrun -np 2 python data_parallel.py --framework torch --out DIR [--convergence]
    python data_parallel.py --framework torch --out DIR --reference        # one process
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit import Trainer, load_recipe, recipe_from_dict
from hvdkit.runtime.rank import run_worker

STEPS = 6
ROOT = Path(__file__).resolve().parents[3]


def recipe(model: str = "mlp", batch: int = 16, lr: float = 0.1, **parallel: object):
    return recipe_from_dict({
        "name": "dp-check",
        "model": {"name": model, "hidden": [32], "channels": [8]},
        "data": {"name": "digits", "drop_last": True},
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.5},
        "train": {"batch_size": batch, "max_steps": STEPS, "log_every_steps": 2},
        "parallel": parallel,
    })


def train(framework: str, r, model=None) -> Trainer:
    trainer = Trainer(r, framework, model=model, progress=False, run_dir=None)
    trainer.fit()
    return trainer


def save(out: Path, name: str, arrays: list[np.ndarray]) -> None:
    np.savez(out / f"{name}.npz", *arrays)


def reference(framework: str, out: Path) -> None:
    """One process, batch 32: what 2 ranks x batch 16 must reproduce."""
    save(out, "mlp", train(framework, recipe(batch=32)).adapter.parameters_as_numpy())
    save(out, "cnn", train(framework, recipe("cnn", batch=32)).adapter.parameters_as_numpy())
    accumulated = train(framework, recipe(batch=16, accumulation=2))
    save(out, "accumulate", accumulated.adapter.parameters_as_numpy())


def rank_seeded_model(framework: str, initial: list):
    """A user model whose initial weights differ on every rank (broadcast must fix that)."""
    def build(input_shape, num_classes):
        if framework == "torch":
            import horovod.torch as hvd
            import torch
            torch.manual_seed(1000 + hvd.rank())
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))
            initial.extend(p.detach().numpy().copy() for p in model.parameters())
        else:
            import horovod.tensorflow as hvd
            import keras
            keras.utils.set_random_seed(1000 + hvd.rank())
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                      keras.layers.Dense(num_classes)])
            initial.extend(v.numpy() for v in model.trainable_variables)
        return model
    return build


def distributed(framework: str, out: Path, convergence: bool) -> None:
    runs = {
        "mlp": recipe(),
        "cnn": recipe("cnn"),
        "sum": recipe(lr=0.05, reduction="sum"),
        "accumulate": recipe(batch=8, accumulation=2),
        "fp16": recipe(compression="fp16"),
    }
    trainer = None
    for name, r in runs.items():
        trainer = train(framework, r)
        if trainer.world.is_root:
            save(out, name, trainer.adapter.parameters_as_numpy())
    rank = trainer.world.rank

    initial: list[np.ndarray] = []
    one_step = recipe_from_dict({**recipe().to_dict(), "train": {"batch_size": 16, "max_steps": 1}})
    after = train(framework, one_step, model=rank_seeded_model(framework, initial))
    save(out, f"broadcast_initial.rank{rank}", initial)
    save(out, f"broadcast_after.rank{rank}", after.adapter.parameters_as_numpy())

    uneven = recipe_from_dict({**recipe().to_dict(), "data": {"name": "digits",
                                                              "drop_last": False}})
    shard = Trainer(uneven, framework, progress=False)
    shard._setup()  # the loader exactly as training builds it, on this rank
    np.save(out / f"shard.rank{rank}.npy", shard.loader.epoch_indices(0))

    if convergence:
        summary = Trainer(load_recipe(ROOT / "recipes/digits_mlp.yaml"), framework,
                          progress=False).fit()
        if rank == 0:
            (out / "convergence.json").write_text(json.dumps(summary))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--convergence", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reference:
        reference(args.framework, args.out)
    else:
        distributed(args.framework, args.out, args.convergence)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
