"""A 2-rank job with checkpoints in which rank 1 fails after step FAIL_AT: it raises (after
a stall long enough for Horovod's stall inspector to name it), or it SIGKILLs itself.

    python -c "from hvdkit.launch.job import *; from hvdkit.launch.options import *;
        run_job(LaunchOptions(np=2), \\
        [python, 'crash_checkpoint.py', '--mode', 'raise', '--out', DIR])"

Rank 1 prints `[crash-check] failing at <unix time>` first, so the test can measure how long
the job took to end after the failure. Checkpoints every 5 steps go to DIR/run/checkpoints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import rank_from_env, run_worker
from hvdkit.training.callbacks import Callback

FAIL_AT = 12
STALL_SECONDS = 12  # > 2 x the warning time (2 s): the inspector checks once per period


class FailOnRankOne(Callback):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def on_step_end(self, step: int, logs: dict) -> None:
        if step + 1 != FAIL_AT or rank_from_env() != 1:
            return
        if self.mode == "raise":
            time.sleep(STALL_SECONDS)  # rank 0 waits in the next allreduce meanwhile
        print(f"[crash-check] failing at {time.time():.3f}", file=sys.stderr, flush=True)
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at step {FAIL_AT}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["raise", "kill"], default="raise")
    parser.add_argument("--framework", default="torch")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    recipe = recipe_from_dict({
        "name": "crash-check", "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"}, "optimizer": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 50, "log_every_steps": 1, "checkpoint_every_steps": 5},
    })
    Trainer(recipe, args.framework, callbacks=[FailOnRankOne(args.mode)], progress=False,
            run_dir=f"{args.out}/run").fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
