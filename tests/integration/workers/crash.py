"""A 2-rank training job in which rank 1 raises at step 3 (the others wait in a collective).

    python -c "from hvdkit.launch.job import *; from hvdkit.launch.options import *;
        run_job(LaunchOptions(np=2), [python, crash.py])"
"""

import sys

from hvdkit import Trainer, recipe_from_dict
from hvdkit.runtime.rank import rank_from_env, run_worker
from hvdkit.training.callbacks import Callback


class FailOnRankOne(Callback):
    def on_step_end(self, step: int, logs: dict) -> None:
        if step == 3 and rank_from_env() == 1:
            raise RuntimeError("injected failure at step 3")


def main() -> int:
    framework = sys.argv[1] if len(sys.argv) > 1 else "torch"
    recipe = recipe_from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
                               "optimizer": {"name": "sgd"},
                               "train": {"epochs": 50, "log_every_steps": 1}})
    Trainer(recipe, framework, callbacks=[FailOnRankOne()], progress=False).fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_worker(main))
