"""Data-source checks that share one Horovod job: the same digits as uint8 arrays in memory
(no prefetch), as .npy files on disk (`data.name: npy`, prefetched), and as a map-style data
set decoded by 2 worker processes; optionally a training file of over 1 GB on disk, for peak
resident memory. Rank 0 saves parameters (npz) and summaries (json); tests compare them.

    horovodrun -np 2 python data_sources.py --framework torch --data DIR --out DIR [--big DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit import Trainer, recipe_from_dict
from hvdkit.data import Dataset
from hvdkit.runtime.rank import run_worker

STEPS = 6


def recipe(data: dict, model: str = "cnn", batch: int = 16, steps: int = STEPS, **train):
    return recipe_from_dict({
        "name": "data-check",
        "model": {"name": model, "hidden": [32], "channels": [8]},
        "data": {"classes": 10, **data},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5},
        "train": {"batch_size": batch, "max_steps": steps, "log_every_steps": 2, **train},
    })


class Pairs:
    """A map-style data set over arrays, as a user would write one."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], int(self.y[i])


def fit(out: Path, name: str, r, data=None) -> dict:
    trainer = Trainer(r, args.framework, data=data, progress=False, run_dir=None)
    summary = trainer.fit()
    if trainer.world.is_root:
        np.savez(out / f"{name}.npz", *trainer.adapter.parameters_as_numpy())
        (out / f"{name}.json").write_text(json.dumps(summary))
    return summary


def main() -> int:
    arrays = [np.load(args.data / f"{n}.npy") for n in ("x_train", "y_train", "x_test", "y_test")]
    fit(args.out, "memory", recipe({"name": "digits", "prefetch": 0}), data=Dataset(*arrays))
    fit(args.out, "npy", recipe({"name": "npy", "path": str(args.data)}))
    if args.framework == "torch":
        pairs = (Pairs(*arrays[:2]), Pairs(*arrays[2:]))
        fit(args.out, "map", recipe({"name": "digits", "workers": 2}), data=pairs)
    if args.big is not None:  # one epoch over the whole file: a small model, big batches
        fit(args.out, "big", recipe({"name": "npy", "path": str(args.big)}, model="mlp",
                                    batch=512, steps=0, eval_every_epochs=1))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--big", type=Path)
    args = parser.parse_args()
    sys.exit(run_worker(main))
