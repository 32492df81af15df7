"""GPU checks that share one process (or one job); rank 0 saves npz and json files.

    python gpu.py --out DIR --mode devices        # the same steps on the CPU and on cuda:0
    python gpu.py --out DIR --mode placement      # a model split over cuda:0 and the CPU
    horovodrun --gloo -np 2 python gpu.py --out DIR --mode data-parallel   # a GPU per rank
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import run_worker

STEPS = 6


def recipe(device: str, batch: int = 16, **parallel: object):
    return recipe_from_dict({
        "name": "gpu-check",
        "model": {"name": "mlp", "hidden": [32, 16]},
        "data": {"name": "digits", "drop_last": True},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5},
        "train": {"batch_size": batch, "max_steps": STEPS, "log_every_steps": 3,
                  "device": device},
        "parallel": parallel,
    })


def train(r) -> tuple[list[np.ndarray], dict]:
    trainer = Trainer(r, "torch", progress=False, run_dir=None)
    summary = trainer.fit()
    return trainer.adapter.parameters_as_numpy(), summary


def save(out: Path, name: str, arrays: list[np.ndarray], summary: dict) -> None:
    np.savez(out / f"{name}.npz", *arrays)
    (out / f"{name}.json").write_text(json.dumps({"device": summary["device"],
                                                  "np": summary["np"]}))


def main() -> int:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products as on the CPU
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--mode", required=True,
                        choices=["devices", "placement", "data-parallel"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "devices":
        for device in ("cpu", "auto"):
            save(args.out, device, *train(recipe(device)))
        save(args.out, "cpu32", *train(recipe("cpu", batch=32)))
    elif args.mode == "placement":
        save(args.out, "placed", *train(recipe("auto", placement=["cuda:0", "cpu"])))
    else:
        params, summary = train(recipe("auto"))
        import horovod.torch as hvd

        if hvd.rank() == 0:
            save(args.out, "data_parallel", params, summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
