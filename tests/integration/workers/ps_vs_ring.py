"""Trains one small recipe three times in one Horovod job — ring-allreduce, the parameter
server, then no exchange (`parallel.sync none`, the calibration of `hvdkit predict`) — and saves
each run's parameters (every rank's) and rank 0 the summaries for the test to compare.

    horovodrun -np 2 python ps_vs_ring.py --framework torch --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import run_worker

STEPS = 6
BATCH = 16


def recipe(sync: str):
    return recipe_from_dict({
        "name": "ps-check",
        "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5},
        "train": {"batch_size": BATCH, "max_steps": STEPS, "log_every_steps": 2,
                  "timing_warmup_steps": 2},
        "parallel": {"sync": sync},
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {}
    for sync in ("allreduce", "ps", "none"):
        trainer = Trainer(recipe(sync), args.framework, progress=False, run_dir=None)
        summary = trainer.fit()
        params = trainer.adapter.parameters_as_numpy()
        assert trainer.world is not None
        np.savez(args.out / f"{sync}-rank{trainer.world.rank}.npz", *params)
        if trainer.world.is_root:
            np.savez(args.out / f"{sync}.npz", *params)
            results[sync] = {key: summary[key] for key in
                             ("timed", "np", "exchange", "parameters", "parameter_tensors")}
    if results:
        (args.out / "summary.json").write_text(json.dumps(results))


if __name__ == "__main__":
    raise SystemExit(run_worker(main))
