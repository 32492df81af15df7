"""Real models in one Horovod job per framework: a GPT on 2 ranks, the same GPT as a 2-stage
pipeline (its tied embedding and head on different stages), and a small ResNet-18's losses.
Rank 0 saves npz and json files for tests/integration/test_models.py.

    horovodrun -np 2 python models.py --framework torch --out DIR
    python models.py --framework torch --out DIR --reference     # one process: batch 2 x 8,
                                                                 # and a user's model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import run_worker
from hvdkit.training.callbacks import Callback

STEPS = 4
BATCH = 8  # per rank; the reference takes 2 x BATCH


def gpt(batch: int = BATCH, **parallel: object):
    return recipe_from_dict({
        "name": "gpt-check",
        "model": {"name": "gpt", "layers": 2, "heads": 2, "width": 16, "block_size": 16},
        "data": {"builder": "lmdata:byte_windows", "args": {"block": 16}},  # this folder
        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.5},
        "train": {"batch_size": batch, "max_steps": STEPS, "log_every_steps": 2},
        "parallel": parallel,
    })


def resnet(**model):
    return recipe_from_dict({
        "name": "resnet-check",
        "model": {"name": "resnet", "depth": 18, "stem": "small", "width": 4, **model},
        # 32 training images, one global batch: 8 steps over the same images must fit them.
        "data": {"name": "synthetic", "samples": 40, "shape": [8, 8, 3], "classes": 2},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"batch_size": 16, "epochs": 8, "log_every_steps": 1},
    })


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, step: int, logs: dict) -> None:
        self.losses.append(logs["loss"])


def train(framework: str, r, callbacks=(), model=None) -> Trainer:
    trainer = Trainer(r, framework, progress=False, run_dir=None, callbacks=callbacks,
                      model=model)
    trainer.summary = trainer.fit()
    return trainer


def save(out: Path, name: str, arrays: list[np.ndarray]) -> None:
    np.savez(out / f"{name}.npz", *arrays)


def user_model(framework: str, out: Path) -> None:
    """A model as users write it, given as an instance: for TensorFlow a Keras model built
    before the Trainer (which starts TensorFlow's runtime) ending in a softmax; for PyTorch a
    CNN taking channels-first images. Must run first in its process."""
    first = framework == "torch"
    r = recipe_from_dict({
        "model": {"name": "mlp", "channels_first": first}, "data": {"name": "digits"},
        "optimizer": {"name": "adam", "lr": 0.01}, "train": {"batch_size": 32, "epochs": 3}})
    if first:
        from torch import nn

        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(8 * 8 * 8, 10))
    else:
        import keras

        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
    trainer = train(framework, r, model=model)
    (out / "user_model.json").write_text(json.dumps({
        "outputs": trainer.adapter.task.outputs, **trainer.summary}))


def reference(framework: str, out: Path) -> None:
    user_model(framework, out)
    save(out, "gpt_single", train(framework, gpt(2 * BATCH)).adapter.parameters_as_numpy())
    # One process, the model placed in two parts: the tied weight is still one weight.
    placed = train(framework, gpt(2 * BATCH, placement=["cpu", "cpu"]))
    save(out, "gpt_placed", placed.adapter.parameters_as_numpy())


def distributed(framework: str, out: Path) -> None:
    from mpi4py import MPI

    dp = train(framework, gpt())
    rank = dp.world.rank
    if rank == 0:
        save(out, "gpt_dp", dp.adapter.parameters_as_numpy())
        (out / "gpt_dp.json").write_text(json.dumps(dp.summary))
    pipe = train(framework, gpt(2 * BATCH, stages=2, microbatches=2))
    stages = MPI.COMM_WORLD.gather(pipe.adapter.parameters_as_numpy(), root=0)
    if rank == 0:
        save(out, "gpt_pipe_stage0", stages[0])
        save(out, "gpt_pipe_stage1", stages[1])
        (out / "gpt_pipe.json").write_text(json.dumps(pipe.summary))
    # The tied weights under the split backward (zb-h1) and virtual stages (interleaved, v=2:
    # stage 0 holds chunks 0 and 2, the embedding in chunk 0; stage 1 the head in chunk 3).
    for schedule, virtual in (("zb-h1", 1), ("interleaved", 2)):
        run = train(framework, gpt(2 * BATCH, stages=2, microbatches=2, schedule=schedule,
                                   virtual_stages=virtual))
        stages = MPI.COMM_WORLD.gather(run.adapter.parameters_as_numpy(), root=0)
        if rank == 0:
            save(out, f"gpt_{schedule}_stage0", stages[0])
            save(out, f"gpt_{schedule}_stage1", stages[1])
            (out / f"gpt_{schedule}.json").write_text(json.dumps(run.summary))
    losses = Losses()
    train(framework, resnet(), [losses])
    if rank == 0:
        (out / "resnet_losses.json").write_text(json.dumps(losses.losses))
    if framework == "torch":  # channels-last through Horovod's broadcast and allreduce
        for memory_format in ("contiguous", "channels_last"):
            losses = Losses()
            train(framework, resnet(width=8, memory_format=memory_format), [losses])
            if rank == 0:
                (out / f"resnet_{memory_format}.json").write_text(json.dumps(losses.losses))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (reference if args.reference else distributed)(args.framework, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
