"""Pipeline checks that share one job per layout; rank 0 saves npz and json files for the tests.

    python pipeline.py --framework torch --out DIR --reference   # one process: plain training
                                                                 # (batch 16 and 32), placement
    horovodrun -np 2 python pipeline.py --framework torch --out DIR      # each schedule, m=4
    horovodrun -np 4 python pipeline.py --framework torch --out DIR --hybrid   # 2 stages x 2
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
from hvdkit.runtime.rank import run_worker
from hvdkit.training.callbacks import Callback

STEPS = 6
BATCH = 16


STOP_AT = 4  # the interrupted run stops after this step; it checkpointed at step 3


def recipe(batch: int = BATCH, checkpoint_every: int = 0, **parallel: object):
    return recipe_from_dict({
        "name": "pipeline-check",
        "model": {"name": "mlp", "hidden": [32, 16, 16]},
        "data": {"name": "digits"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5},
        "train": {"batch_size": batch, "max_steps": STEPS, "log_every_steps": 3,
                  "checkpoint_every_steps": checkpoint_every},
        "parallel": parallel,
    })


class Steps(Callback):
    """The steps a run took (0-based)."""

    def __init__(self) -> None:
        self.taken: list[int] = []

    def on_step_end(self, step: int, logs: dict) -> None:
        self.taken.append(step)


def train(framework: str, r) -> tuple[Trainer, dict]:
    trainer = Trainer(r, framework, progress=False, run_dir=None)
    summary = trainer.fit()
    return trainer, summary


def gathered(trainer: Trainer) -> list[list[np.ndarray]] | None:
    """Every rank's parameters, on rank 0 (in rank order), None elsewhere."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(trainer.adapter.parameters_as_numpy(), root=0)


def save(out: Path, name: str, arrays: list[np.ndarray]) -> None:
    np.savez(out / f"{name}.npz", *arrays)


def in_model_order(ranks: list[list[np.ndarray]], virtual: int) -> list[np.ndarray]:
    """One pipeline's parameters in the model's order: with v chunks per stage, stage s holds
    chunks s, s + 2, ...; here every chunk is one layer (a weight and a bias)."""
    if virtual == 1:
        return ranks[0] + ranks[1]
    return [a for k in range(virtual) for stage in ranks[:2] for a in stage[2 * k:2 * k + 2]]


def reference(framework: str, out: Path) -> None:
    save(out, "single16", train(framework, recipe())[0].adapter.parameters_as_numpy())
    save(out, "single32", train(framework, recipe(batch=2 * BATCH))[0]
         .adapter.parameters_as_numpy())
    placed, _ = train(framework, recipe(placement=["cpu", "cpu"]))
    save(out, "placed", placed.adapter.parameters_as_numpy())


def pipelines(framework: str, out: Path) -> None:
    # 1F1B cuts by measured time: profiling runs layers forward and backward, and must leave
    # them as built, or the parameters below would differ from single-process training.
    for name, split, virtual in (("gpipe", "params", 1), ("1f1b", "time", 1),
                                 ("interleaved", "params", 2), ("zb-h1", "time", 1)):
        trainer, summary = train(framework, recipe(stages=2, microbatches=4, schedule=name,
                                                   split=split, virtual_stages=virtual))
        ranks = gathered(trainer)
        if ranks is not None:
            save(out, name, in_model_order(ranks, virtual))
            (out / f"{name}.json").write_text(json.dumps(summary["pipeline"]))
    # A placement over two devices on each of 2 ranks: data parallel over both (batch 2x16).
    placed, _ = train(framework, recipe(placement=["cpu", "cpu"]))
    ranks = gathered(placed)
    if ranks is not None:
        save(out, "placed_rank0", ranks[0])
        save(out, "placed_rank1", ranks[1])
    resumed(framework, out)


def resumed(framework: str, out: Path) -> None:
    """Stopped after step STOP_AT (a checkpoint every 3 steps), then resumed to the end; on
    the interleaved schedule, whose stages checkpoint two chunks each."""
    r = recipe(checkpoint_every=3, stages=2, microbatches=4, schedule="interleaved",
               virtual_stages=2)
    run_dir = out / "stopped"
    with contextlib.suppress(Stop):
        Trainer(r, framework, progress=False, run_dir=run_dir, callbacks=[StopAfter(STOP_AT)]).fit()
    steps = Steps()
    trainer = Trainer(r, framework, progress=False, run_dir=run_dir, resume="latest",
                      callbacks=[steps])
    trainer.fit()
    ranks = gathered(trainer)
    if ranks is not None:
        save(out, "resumed", in_model_order(ranks, 2))
        (out / "resumed.json").write_text(json.dumps({"steps": steps.taken}))


HYBRID_CASES = (  # name, compression, schedule, sync
    ("hybrid", "none", "1f1b", "allreduce"), ("hybrid_fp16", "fp16", "1f1b", "allreduce"),
    ("hybrid_zb", "none", "zb-h1", "allreduce"), ("hybrid_zero1", "none", "1f1b", "zero1"),
    ("hybrid_ps", "none", "1f1b", "ps"), ("hybrid_powersgd", "powersgd", "1f1b", "allreduce"))
# TensorFlow's 4-rank job runs the compositions this job adds to PyTorch's: the ring as the
# reference, the parameter server and PowerSGD.
TENSORFLOW_CASES = ("hybrid", "hybrid_ps", "hybrid_powersgd")


def gpt_recipe(**parallel: object):
    """A tiny GPT whose tied embedding and head land on different stages."""
    return recipe_from_dict({
        "name": "gpt-check",
        "model": {"name": "gpt", "layers": 2, "heads": 2, "width": 16, "block_size": 16},
        "data": {"builder": "lmdata:byte_windows", "args": {"block": 16}},  # this folder
        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.5},
        "train": {"batch_size": 8, "max_steps": 4, "log_every_steps": 2},
        "parallel": parallel,
    })


def hybrid(framework: str, out: Path) -> None:
    for name, compression, schedule, sync in HYBRID_CASES:
        if framework == "tensorflow" and name not in TENSORFLOW_CASES:
            continue
        # PowerSGD past its warm-up from the second step, at rank 2.
        trainer, summary = train(framework, recipe(stages=2, microbatches=4, schedule=schedule,
                                                   compression=compression, sync=sync,
                                                   powersgd_warmup_steps=1))
        ranks = gathered(trainer)
        if ranks is not None:  # rank = replica x 2 + stage
            save(out, name, ranks[0] + ranks[1])
            save(out, f"{name}_replica1", ranks[2] + ranks[3])
            (out / f"{name}.json").write_text(json.dumps({**summary["pipeline"],
                                                          "exchange": summary["exchange"]}))
    # The tied embedding and head of a GPT on different stages, under PowerSGD.
    trainer, summary = train(framework, gpt_recipe(stages=2, microbatches=2,
                                                   compression="powersgd",
                                                   powersgd_warmup_steps=1))
    ranks = gathered(trainer)
    if ranks is not None:
        for rank, arrays in enumerate(ranks):
            save(out, f"gpt_powersgd_rank{rank}", arrays)
        (out / "gpt_powersgd.json").write_text(json.dumps(summary["exchange"]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--hybrid", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = reference if args.reference else hybrid if args.hybrid else pipelines
    run(args.framework, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
