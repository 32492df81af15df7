"""When each gradient is ready during PyTorch's backward, measured on a recipe's own model.

PyTorch's hooks hand a gradient to Horovod the moment backward has it, so when the big ones
are ready decides how much of the exchange hides behind the rest of backward. Readiness in
proportion to bytes is right for an MLP or a transformer (each weight used once per sample
or token) and wrong for a CNN, whose few convolution weights carry most of the compute while
its dense layer's many weights, ready first, carry little. One process trains the recipe for
a few steps (`hvdkit.Trainer`, no exchange) with a hook on every parameter's gradient and on
the model's forward: each tensor's ready time as a fraction of its step's backward (forward's
end to the last gradient), the median over the steps after the first, forward order.

    python -m hvdkit.bench.gradient_ready RECIPE --batch 64 --steps 12 --out ready.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hvdkit.training.callbacks import Callback, Logs


class ReadyTimes(Callback):
    """Per step: each parameter's gradient-ready time as a fraction of the step's backward."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.steps: list[list[float]] = []
        self._ready: list[float] = []
        self._forward_end = 0.0

    def on_train_begin(self, logs: Logs) -> None:
        model = self.trainer.adapter.model
        params = list(model.parameters())
        self._ready = [0.0] * len(params)
        for i, param in enumerate(params):
            param.register_post_accumulate_grad_hook(lambda _p, i=i: self._mark(i))
        model.register_forward_hook(lambda *_: self._next_step())

    def _mark(self, i: int) -> None:
        self._ready[i] = time.perf_counter()

    def _next_step(self) -> None:
        """At a forward's end: keep the last step's fractions (if its backward ran)."""
        start, end = self._forward_end, max(self._ready, default=0.0)
        if start and min(self._ready) > start and end > start:
            self.steps.append([(t - start) / (end - start) for t in self._ready])
        self._ready = [0.0] * len(self._ready)
        self._forward_end = time.perf_counter()

    def fractions(self) -> list[float]:
        kept = self.steps[1:] or self.steps  # the first step warms up
        return [statistics.median(col) for col in zip(*kept, strict=True)] if kept else []


def measure(recipe_path: str, batch: int, steps: int, threads: int,
            overrides: list[str]) -> list[float]:
    from hvdkit.recipe import load_recipe
    from hvdkit.trainer import Trainer

    recipe = load_recipe(recipe_path, [*overrides, f"train.batch_size={batch}",
                                       f"train.max_steps={steps}", f"train.threads={threads}",
                                       "train.epochs=1000"])
    probe = ReadyTimes()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, "torch", callbacks=[probe], run_dir=run_dir, progress=False,
                          tensorboard=False)
        probe.trainer = trainer
        trainer.fit()
    return probe.fractions()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    fractions = measure(args.recipe, args.batch, args.steps, args.threads, args.overrides)
    args.out.write_text(json.dumps({"ready": fractions}))


if __name__ == "__main__":
    from hvdkit.runtime.rank import run_worker

    raise SystemExit(run_worker(main))
