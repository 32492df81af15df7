"""ZeRO-1 against the plain ring in one job: Trainer runs alternating, Adam, one framework.
Rank 0 prints one JSON line: samples/s per round and the optimizer-state bytes of each.

    horovodrun -np 2 python benchmarks/workers/zero.py --framework torch --rounds 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hvdkit import Trainer, load_recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"allreduce": [], "zero1": []}
    state: dict[str, int] = {}
    rank = 0
    for _ in range(args.rounds):
        for sync in rates:  # alternating, so that drifts of the machine hit both alike
            recipe = load_recipe(ROOT / "recipes/synthetic_mlp.yaml", [
                "optimizer.name=adam", "optimizer.lr=0.001", f"parallel.sync={sync}",
                f"train.max_steps={args.steps}", "train.threads=1", "train.log_every_steps=20",
                "train.eval_every_epochs=1000"])
            trainer = Trainer(recipe, args.framework, progress=False)
            summary = trainer.fit()
            rank = trainer.world.rank
            rates[sync].append(summary["timed"]["samples_per_sec"])
            state[sync] = summary["exchange"]["optimizer_state_bytes"]
    if rank == 0:
        print(json.dumps({"samples_per_sec": rates, "optimizer_state_bytes": state}), flush=True)


if __name__ == "__main__":
    main()
