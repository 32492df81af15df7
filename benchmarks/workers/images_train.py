"""Runs inside a 2-rank Horovod job: hvdkit trains resnet_small.yaml's model (ResNet-18, small
stem) at 32x32 from a JPEG folder (`data.name: images`, `--workers` decoding processes per
rank) and from the same images decoded once (their test-time crop) and held in memory as
uint8 arrays, alternating rounds so both see the same machine load. Rank 0 prints one JSON
line: each round's barrier-timed samples/s, and the folder runs' data wait share and the
share of the time their decoding workers were busy.

    horovodrun -np 2 python benchmarks/workers/images_train.py --folder DIR --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from hvdkit import Trainer, load_recipe
from hvdkit.data import Dataset, build_source
from hvdkit.runtime.rank import rank_from_env, run_worker

RECIPE = "recipes/resnet_small.yaml"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--framework", default="torch")
    args = parser.parse_args()
    common = [f"train.max_steps={args.steps}", "train.eval_every_epochs=100",
              "train.timing_warmup_steps=2", "train.threads=1"]
    folder = [*common, "data.name=images", f"data.path={args.folder}", "data.image_size=32",
              f"data.workers={args.workers}", "data.classes=0"]
    # The same images in memory: each decoded once (its test-time crop), uint8, channels last.
    decoded = build_source(load_recipe(RECIPE, folder).data, seed=0)
    decoded.train.train = False  # the deterministic crop
    arrays = [array for split in (decoded.train, decoded.test)
              for array in split.decode(np.arange(len(split)), 0)[:2]]
    in_memory = Dataset(*arrays, num_classes=decoded.num_classes)
    rates: dict[str, list[float]] = {"memory": [], "folder": [], "wait": [], "busy": []}
    for _ in range(args.rounds):
        for variant in ("memory", "folder"):
            recipe = load_recipe(RECIPE, folder if variant == "folder" else common)
            data = in_memory if variant == "memory" else None
            summary = Trainer(recipe, args.framework, data=data, progress=False).fit()
            rates[variant].append(summary["timed"]["samples_per_sec"])
            if variant == "folder":
                rates["wait"].append(summary["input"].get("data_wait_share", 0.0))
                rates["busy"].append(summary["input"].get("decoder_busy_share", 0.0))
    if rank_from_env() == 0:
        print(json.dumps(rates), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
