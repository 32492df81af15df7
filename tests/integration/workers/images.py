"""Image checks that share one Horovod job (run on every rank), on a generated folder of JPEGs
and PNGs in 3 classes with one corrupt file, decoded by 2 worker processes per rank:

1. the folder trained without a stop; each rank notes the training samples it asked for in
   each epoch (DIR/seen-<rank>.json);
2. the same run stopped after step STOP_AT (every rank raises), checkpoints every 4 steps;
3. resumed from the newest checkpoint: must end bit for bit equal to 1;
4. the same images as WebDataset shards (training and test shards).

    horovodrun -np 2 python images.py --framework torch --folder DIR --shards DIR --out DIR

Rank 0 writes DIR/results.json and the summaries; the test reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
from stopping import Stop, StopAfter  # this folder: the script's own

from hvdkit import Trainer, recipe_from_dict
from hvdkit.data.images import ImageSamples
from hvdkit.runtime.rank import rank_from_env, run_worker

STOP_AT = 10  # steps; 7 a epoch, checkpoints at 4 and 8: resumed mid-epoch 2, 2 steps again
SEEN: dict[int, list[int]] = {}


def recipe(data: dict, **train):
    return recipe_from_dict({
        "name": "images-check",
        "model": {"name": "cnn", "channels": [8, 16], "hidden": [32]},
        "data": {"image_size": 32, "workers": 2, **data},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"batch_size": 16, "epochs": 2, "log_every_steps": 2, **train},
    })


def noting(submit):
    """ImageSamples.submit, noting the training positions asked for, by epoch."""
    def wrapped(self: ImageSamples, idx: np.ndarray):
        if self.train:
            SEEN.setdefault(self.epoch, []).extend(int(i) for i in idx)
        return submit(self, idx)
    return wrapped


def params(trainer: Trainer) -> list[np.ndarray]:
    return trainer.adapter.parameters_as_numpy()


def main() -> int:
    fw, out = args.framework, args.out
    folder = {"name": "images", "path": str(args.folder)}
    results: dict = {}

    ImageSamples.submit = noting(ImageSamples.submit)  # type: ignore[method-assign]
    full = Trainer(recipe(folder), fw, progress=False, run_dir=None)
    summaries = {"full": full.fit()}
    (out / f"seen-{rank_from_env()}.json").write_text(json.dumps(SEEN))
    reference = params(full)

    run = out / "run"
    with contextlib.suppress(Stop):
        Trainer(recipe(folder, checkpoint_every_steps=4), fw, progress=False, run_dir=run,
                callbacks=[StopAfter(STOP_AT)]).fit()
    resumed = Trainer(recipe(folder, checkpoint_every_steps=4), fw, progress=False,
                      run_dir=run, resume="latest")
    summaries["resumed"] = resumed.fit()
    results["resumed_equal"] = all(np.array_equal(a, b) for a, b in
                                   zip(params(resumed), reference, strict=True))

    shards = {"name": "webdataset", "path": str(args.shards / "train-{000000..000003}.tar"),
              "val_path": str(args.shards / "val-000000.tar"), "shard_group": 2}
    summaries["webdataset"] = Trainer(recipe(shards), fw, progress=False, run_dir=None).fit()
    if full.world is not None and full.world.is_root:
        (out / "results.json").write_text(json.dumps({**results, **summaries}, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.exit(run_worker(main))
