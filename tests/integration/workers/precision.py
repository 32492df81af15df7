"""Mixed precision, fp16 loss scaling, gradient clipping and compilation through the Trainer,
in one Horovod job per framework. Rank 0 writes results.json (and the reference's npz files).

    python precision.py --framework torch --out DIR --reference       # one process, batch 32
    horovodrun -np 2 python precision.py --framework torch --out DIR [--full]
    mpirun -np 4 python precision.py --framework torch --out DIR --hybrid   # 2 stages x 2

--full (the MPI job) adds what one controller is enough for: a 2-stage pipeline with
clip_norm, fp16 stopped and resumed, compilation against eager, and digits_cnn in bf16.

The checks are of numbers, not of speed, so they set train.precision_force: on a CPU without
native bf16 / fp16 (AVX2) the emulated types are asked for knowingly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
from stopping import Stop, StopAfter  # this folder: the script's own

from hvdkit import Trainer, load_recipe, recipe_from_dict
from hvdkit.parallel import loss_scale
from hvdkit.runtime.rank import run_worker

STEPS = 6
BATCH = 16  # per rank; the reference takes 2 x BATCH in one process
CLIP = 0.02  # small, so that the clip acts (the tests check that it changes the result)
OVERFLOW_SCALE = 2.0 ** 40  # fp16 overflows until the scale is halved to about 2^16
ROOT = Path(__file__).resolve().parents[3]

# Every LossScale.update call of this process, in order: True where the step applied.
HISTORY: list[bool] = []
_update = loss_scale.LossScale.update


def _recorded(self: loss_scale.LossScale, finite: bool) -> bool:
    HISTORY.append(bool(finite))
    return _update(self, finite)


loss_scale.LossScale.update = _recorded  # type: ignore[method-assign]


def recipe(batch: int = BATCH, steps: int = STEPS, train: dict | None = None,
           optimizer: dict | None = None, **parallel: object):
    return recipe_from_dict({
        "name": "precision-check",
        "model": {"name": "mlp", "hidden": [32, 16]},
        "data": {"name": "digits"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.5, **(optimizer or {})},
        "train": {"batch_size": batch, "max_steps": steps, "log_every_steps": 3,
                  "precision_force": True, **(train or {})},
        "parallel": parallel,
    })


def overflow(steps: int, **extra: object) -> dict:
    """fp16 forced to overflow at the start; the scale also grows back every 20 steps."""
    return {"precision": "fp16", "loss_scale": OVERFLOW_SCALE, "loss_scale_growth_steps": 20,
            "max_steps": steps, **extra}


def fit(framework: str, r, **kwargs) -> tuple[Trainer, dict]:
    trainer = Trainer(r, framework, progress=False, **{"run_dir": None, **kwargs})
    summary = trainer.fit()
    return trainer, summary


def gathered(trainer: Trainer, values: object) -> list | None:
    """Every rank's `values`, in rank order, on rank 0 (None elsewhere); through Horovod, so
    that it works under Gloo too."""
    every = trainer.adapter.hvd.allgather_object(values)
    return every if trainer.world.is_root else None


def save(out: Path, name: str, arrays: list[np.ndarray]) -> None:
    np.savez(out / f"{name}.npz", *arrays)


def reference(framework: str, out: Path) -> None:
    """One process on the double batch: fp32, bf16, and clipped."""
    save(out, "fp32", fit(framework, recipe(2 * BATCH))[0].adapter.parameters_as_numpy())
    save(out, "bf16", fit(framework, recipe(2 * BATCH, train={"precision": "bf16"}))[0]
         .adapter.parameters_as_numpy())
    save(out, "clip", fit(framework, recipe(2 * BATCH, optimizer={"clip_norm": CLIP}))[0]
         .adapter.parameters_as_numpy())


def params_of_every_rank(trainer: Trainer) -> list[list[np.ndarray]] | None:
    return gathered(trainer, trainer.adapter.parameters_as_numpy())


def check_overflow(framework: str, r, results: dict, name: str) -> None:
    """A forced-overflow fp16 run: each rank's skip history and final scale, and whether the
    replicas' parameters are bit-equal."""
    HISTORY.clear()
    trainer, summary = fit(framework, r)
    ranks = gathered(trainer, {"history": list(HISTORY), "exchange": summary["exchange"],
                      "params": trainer.adapter.parameters_as_numpy()})
    if ranks is None:
        return
    results[name] = {
        "histories": [rank["history"] for rank in ranks],
        "scales": [rank["exchange"]["loss_scale"] for rank in ranks],
        "skipped": [rank["exchange"]["skipped_steps"] for rank in ranks],
        "test_accuracy": summary.get("test_accuracy"),
        "train_loss": summary["train_loss"],
    }
    stages = r.parallel.stages  # rank = replica x stages + stage: compare within a stage
    results[name]["replicas_bit_equal"] = all(
        all(np.array_equal(a, b) for a, b in zip(ranks[i % stages]["params"], rank["params"],
                                                  strict=True))
        for i, rank in enumerate(ranks))


def distributed(framework: str, out: Path, full: bool) -> None:
    results: dict = {}
    runs = {"fp32": recipe(), "bf16": recipe(train={"precision": "bf16"}),
            "clip": recipe(optimizer={"clip_norm": CLIP}),
            "clip_zero1": recipe(optimizer={"clip_norm": CLIP}, sync="zero1")}
    for name, r in runs.items():
        trainer, _ = fit(framework, r)
        ranks = params_of_every_rank(trainer)
        if ranks is not None:
            save(out, name, ranks[0])
            results[f"{name}_replicas_bit_equal"] = all(
                np.array_equal(a, b) for a, b in zip(ranks[0], ranks[1], strict=True))
    check_overflow(framework, recipe(train=overflow(200, epochs=5),
                                     optimizer={"momentum": 0.9}), results, "fp16")
    check_overflow(framework, recipe(train=overflow(60, epochs=2), sync="zero1"), results,
                   "fp16_zero1")
    if full:
        full_checks(framework, out, results)
    if trainer.world.is_root:
        (out / "results.json").write_text(json.dumps(results))


def full_checks(framework: str, out: Path, results: dict) -> None:
    # A 2-stage pipeline (one replica of the double batch) with the clip.
    trainer, _ = fit(framework, recipe(2 * BATCH, optimizer={"clip_norm": CLIP}, stages=2,
                                       microbatches=4))
    ranks = params_of_every_rank(trainer)
    if ranks is not None:
        save(out, "clip_pipeline", ranks[0] + ranks[1])  # stage 0's layers, then stage 1's
    # fp16 stopped after step 10 (a checkpoint every 7 steps), resumed to step 30, against
    # the uninterrupted run: the loss scale and its counters travel in the checkpoint. From
    # 2^20 it skips a few steps, then grows every 5 steps and overflows again.
    r = recipe(train=overflow(30, checkpoint_every_steps=7, loss_scale_growth_steps=5,
                              loss_scale=2.0 ** 20))
    whole, _ = fit(framework, r)
    run_dir = out / "stopped"
    with contextlib.suppress(Stop):
        fit(framework, r, run_dir=run_dir, callbacks=[StopAfter(10)])
    resumed, summary = fit(framework, r, run_dir=run_dir, resume="latest")
    if whole.world.is_root:
        results["resume_bit_equal"] = all(np.array_equal(a, b) for a, b in zip(
            whole.adapter.parameters_as_numpy(), resumed.adapter.parameters_as_numpy(),
            strict=True))
        results["resume_exchange"] = summary["exchange"]
    # Compiled against eager, fp32.
    eager, _ = fit(framework, recipe())
    compiled, summary = fit(framework, recipe(train={"compile": True}))
    if compiled.world.is_root:
        results["compile_vs_eager"] = max(float(np.abs(a - b).max()) for a, b in zip(
            eager.adapter.parameters_as_numpy(), compiled.adapter.parameters_as_numpy(),
            strict=True))
        results["compile_seconds"] = summary.get("compile_seconds")
    # The digits CNN recipe in bf16.
    cnn = load_recipe(ROOT / "recipes/digits_cnn.yaml", overrides=["train.precision=bf16",
                                                                  "train.precision_force=true"])
    _, summary = fit(framework, cnn)
    results["digits_cnn_bf16_accuracy"] = summary.get("test_accuracy")


def hybrid(framework: str, out: Path) -> None:
    """2 stages x 2 replicas, fp16 forced to overflow: every rank skips the same steps."""
    results: dict = {}
    check_overflow(framework, recipe(train=overflow(60, epochs=2), stages=2, microbatches=4),
                   results, "fp16_hybrid")
    if results:
        (out / "hybrid.json").write_text(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--hybrid", action="store_true")
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reference:
        reference(args.framework, args.out)
    elif args.hybrid:
        hybrid(args.framework, args.out)
    else:
        distributed(args.framework, args.out, args.full)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
