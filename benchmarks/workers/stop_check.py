"""Worker for bench_stop_check.py: the same training with and without the stop check (reading
the stop file at each metrics flush, hvdkit.launch.guard) and the heartbeat's step hook,
alternating in one job; prints JSON."""

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
        self.step_hooks = [self.checkpointer.after_step]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    recipe = load_recipe("recipes/digits_mlp.yaml", [f"train.max_steps={args.steps}",
                                                     "train.epochs=100", "train.threads=1"])
    rates: dict[str, list[float]] = {"with": [], "without": []}
    rank = 0
    for _ in range(args.rounds):
        for name, cls in (("with", Trainer), ("without", WithoutStopCheck)):
            trainer = cls(recipe, "torch", progress=False)
            summary = trainer.fit()
            rank = trainer.world.rank
            rates[name].append(summary["timed"]["samples_per_sec"])
    if rank == 0:
        print(json.dumps({k: statistics.median(v) for k, v in rates.items()} | {"raw": rates}),
              flush=True)


if __name__ == "__main__":
    main()
