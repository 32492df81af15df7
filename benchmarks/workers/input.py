"""Runs inside a 2-rank Horovod job: hvdkit trains the synthetic CNN on the same uint8 images
held in memory (a `Dataset` of arrays) and read from .npy files on disk (`data.name: npy`),
alternating rounds so both see the same machine load. Rank 0 prints one JSON line with each
round's barrier-timed samples/s.

    horovodrun -np 2 python benchmarks/workers/input.py --dir DIR --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit import Trainer, load_recipe
from hvdkit.data import Dataset
from hvdkit.runtime.rank import rank_from_env, run_worker

RECIPE = "recipes/synthetic_cnn.yaml"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--framework", default="torch")
    args = parser.parse_args()
    folder = Path(args.dir)
    common = [f"train.epochs={args.epochs}", "train.eval_every_epochs=100", "data.classes=10"]
    in_memory = Dataset(*(np.load(folder / f"{n}.npy")
                          for n in ("x_train", "y_train", "x_test", "y_test")))
    rates: dict[str, list[float]] = {"memory": [], "npy": []}
    for _ in range(args.rounds):
        for variant in rates:
            if variant == "memory":
                recipe, data = load_recipe(RECIPE, common), in_memory
            else:
                recipe = load_recipe(RECIPE, [*common, "data.name=npy", f"data.path={folder}"])
                data = None
            summary = Trainer(recipe, args.framework, data=data, progress=False).fit()
            rates[variant].append(summary["timed"]["samples_per_sec"])
    if rank_from_env() == 0:
        print(json.dumps(rates), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
