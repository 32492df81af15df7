"""BatchNorm statistics across replicas, on a shrunk recipes/resnet_small.yaml.

    horovodrun -np 2 python batchnorm.py --framework torch --out DIR   (phase np2)
    python batchnorm.py --framework torch --out DIR                    (phase np1, after it)

np2: "plain" trains at 2 ranks (each rank's statistics differ) and keeps the reported test
metrics; "sync" trains with model.sync_batchnorm. np1, one process: evaluates plain's
checkpoint, and trains "single" on the double batch. Rank 0 writes DIR/<phase>.json, the
checkpoints' parameters come from DIR/<run>/checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hvdkit import Trainer
from hvdkit.recipe import load_recipe
from hvdkit.runtime.rank import run_worker

ROOT = Path(__file__).resolve().parents[3]
SHRINK = ["model.width=8", "data.samples=384", "data.shape=[16, 16, 3]", "train.epochs=1",
          "train.threads=1", "train.log_every_steps=1", "train.max_steps=3",
          "optimizer.lr=0.005", "optimizer.schedule=constant"]


def recipe(batch: int, sync: bool):
    return load_recipe(ROOT / "recipes" / "resnet_small.yaml",
                       [*SHRINK, f"train.batch_size={batch}",
                        f"model.sync_batchnorm={'true' if sync else 'false'}"])


def test_metrics(summary: dict) -> dict:
    return {k: summary[k] for k in ("test_loss", "test_accuracy")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fw, out = args.framework, Path(args.out)
    results: dict = {}
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("HOROVOD_SIZE", "1"))) > 1:
        phase = "np2"
        plain = Trainer(recipe(16, False), fw, progress=False, run_dir=out / "plain",
                        tensorboard=False).fit()
        results["plain"] = test_metrics(plain)
        synced = Trainer(recipe(16, True), fw, progress=False, run_dir=out / "sync",
                         tensorboard=False).fit()
        results["sync"] = test_metrics(synced)
    else:
        phase = "np1"
        checked = Trainer(recipe(16, False), fw, progress=False, run_dir=None,
                          resume=out / "plain", tensorboard=False)
        checked.fit()  # restores the finished run: nothing left to train
        results["plain_checkpoint"] = checked.evaluate()
        single = Trainer(recipe(32, True), fw, progress=False, run_dir=out / "single",
                         tensorboard=False).fit()
        results["single"] = test_metrics(single)
    (out / f"{phase}.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_worker(main))
