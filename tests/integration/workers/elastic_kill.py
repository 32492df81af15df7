"""An elastic job in which one worker SIGKILLs itself mid-run; the survivor must finish.

    HVDKIT_HOSTS_FILE=hosts.txt horovodrun -np 2 --min-np 1 --max-np 2 \\
        --host-discovery-script launch/discover_hosts.sh \\
        python elastic_kill.py --framework torch --kill-at 30 --marker DIR/killed --out DIR

Rank 1 kills itself (SIGKILL: no clean-up, no goodbye to the others) after `--kill-at` steps,
once: the marker file stops a later rank 1 from doing it again. The last rank 0 writes
summary.json and every step's (epoch, first global sample, samples) to steps.jsonl, so the
test can check that every sample of every epoch was trained and none beyond one commit window
was trained twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import run_worker
from hvdkit.training.callbacks import Callback
from hvdkit.training.checkpoint import Position

COMMIT_EVERY = 4


def recipe(framework: str):
    return recipe_from_dict({
        "name": "elastic-check",
        "model": {"name": "mlp", "hidden": [64]},
        # 1,280 samples: 1,024 to train, a multiple of the global batch at 1 and 2 workers.
        "data": {"name": "synthetic", "samples": 1280, "shape": [16], "classes": 4},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"batch_size": 16, "epochs": 3, "log_every_steps": 2,
                  "commit_every_steps": COMMIT_EVERY},
    })


class KillOnce(Callback):
    """SIGKILL this process when it is rank 1 and `step` is reached, the first time only."""

    def __init__(self, trainer: Trainer, step: int, marker: Path) -> None:
        self.trainer, self.step, self.marker = trainer, step, marker

    def on_step_end(self, step: int, logs: dict) -> None:
        world = self.trainer.world
        if world is None or world.rank != 1 or step + 1 < self.step or self.marker.exists():
            return
        self.marker.write_text(f"{time.time()}\n")
        print(f"[elastic-check] rank 1 (pid {os.getpid()}) SIGKILLs itself at step {step + 1}",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class StepLog:
    """Records every step this rank trained (position before the step, samples taken)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.rows: list[dict] = []
        self.before = Position()

    def hook(self, position: Position) -> None:
        # Called after position.advance, so the step covered [sample - taken, sample).
        taken = position.samples_seen - self.before.samples_seen
        self.rows.append({"epoch": position.epoch, "start": position.sample - taken,
                          "samples": taken, "step": position.step,
                          "world": self.trainer.world.size})
        self.before = Position(**vars(position))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--kill-at", type=int, default=30)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    trainer = Trainer(recipe(args.framework), args.framework, progress=False, run_dir=None,
                      elastic=True)
    trainer.user_callbacks.append(KillOnce(trainer, args.kill_at, Path(args.marker)))
    log = StepLog(trainer)
    _original = trainer.train_from_position

    def train_from_position() -> None:  # hook the step log in after set-up and every reset
        if log.hook not in trainer.step_hooks:
            trainer.step_hooks.insert(0, log.hook)
        log.before = Position(**vars(trainer.position))
        _original()

    trainer.train_from_position = train_from_position  # type: ignore[method-assign]
    summary = trainer.fit()
    if trainer.world is not None and trainer.world.is_root:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        (out / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log.rows))
        print(f"[elastic-check] done: {summary['steps']} steps, world {trainer.world.size}, "
              f"resets {summary['elastic_resets']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
