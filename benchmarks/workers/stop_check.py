"""Worker for bench_stop_check.py: the same training with the stop check as it runs (the stop
file read and the requests in each metrics flush, a tiny allreduce about once a second,
hvdkit.runtime.stop), with a check after every step (what a step of a second or more gets),
and without any check or the heartbeat's step hook, alternating in one job; prints JSON."""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from hvdkit import Trainer, load_recipe


class WithoutStopCheck(Trainer):
    def _setup(self) -> None:
        super()._setup()
        self.stop.requests = lambda: np.zeros(2)  # type: ignore[method-assign]
        self.stop.after_step = lambda: False  # type: ignore[method-assign]
        self.step_hooks = [self.checkpointer.after_step]


class CheckEveryStep(Trainer):
    def _setup(self) -> None:
        super()._setup()
        self.stop.every_s = 0.0  # the interval stays 1 step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    recipe = load_recipe("recipes/digits_mlp.yaml", [f"train.max_steps={args.steps}",
                                                     "train.epochs=100", "train.threads=1"])
    variants = (("with", Trainer), ("every_step", CheckEveryStep), ("without", WithoutStopCheck))
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    rank, global_batch = 0, 0
    for _ in range(args.rounds):
        for name, cls in variants:
            trainer = cls(recipe, "torch", progress=False)
            summary = trainer.fit()
            rank, global_batch = trainer.world.rank, summary["global_batch"]
            rates[name].append(summary["timed"]["samples_per_sec"])
    if rank == 0:
        print(json.dumps({k: statistics.median(v) for k, v in rates.items()}
                         | {"global_batch": global_batch, "raw": rates}), flush=True)


if __name__ == "__main__":
    main()
