"""What happens to the combined gradients between the exchange and the update: fp16's dynamic
loss scale and the global-norm clip, written once for both frameworks.

    guard = StepGuard.plan(recipe, layout, sharded=False)   # None: nothing to do (fp32/bf16)
    loss * guard.scale  → backward → exchange → per rank:  sq = Σ g² (unscaled) / guard.copies
    one SUM allreduce over every rank of [sq]  → total          (the adapter's collective)
    finite = isfinite(total); coefficient = guard.clip_coefficient(total)
    guard.update(finite)   # after the step, on the host: skip, halve, or count and grow

Every rank of the job, whichever stage or shard it holds, sees the same total, so every rank
skips the same steps and moves the scale the same way. A non-finite gradient anywhere makes
the total non-finite: the overflow flag needs no collective of its own. `copies` is how many
ranks hold each gradient whole after the exchange: the replicas after an allreduce (their sum
counts it that many times), 1 after ZeRO-1's reduce-scatter (each rank holds its own shard);
a weight tied across pipeline stages is held by each of them, and counted once in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BACKOFF = 0.5
GROWTH = 2.0
MIN_SCALE = 1.0
MAX_SCALE = 2.0 ** 24
EPSILON = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient = clip / (norm + 1e-6)


@dataclass
class LossScale:
    """Dynamic loss scaling (the rules of torch.amp.GradScaler and Keras's LossScaleOptimizer):
    a step with non-finite gradients is skipped and the scale multiplied by BACKOFF; after
    `growth_steps` finite steps in a row it is multiplied by GROWTH."""

    scale: float = 65536.0
    growth_steps: int = 2000
    good_steps: int = 0
    """Finite steps since the scale last changed."""
    skipped: int = 0
    """Steps skipped so far (over the whole run, checkpoints included)."""

    def update(self, finite: bool) -> bool:
        """Record one step; returns whether its update was applied."""
        if not finite:
            self.scale = max(self.scale * BACKOFF, MIN_SCALE)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_steps:
            self.scale = min(self.scale * GROWTH, MAX_SCALE)
            self.good_steps = 0
        return True

    def state(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state["skipped"])


@dataclass
class StepGuard:
    """This rank's part of the step's guard: the loss scale (fp16, else None), the clip (0:
    off), and the weights that count each gradient's square once across the job."""

    loss_scale: LossScale | None
    clip_norm: float
    copies: int
    """Ranks that hold each (non-tied) gradient whole after the exchange."""
    tied_holders: dict[int, int] = field(default_factory=dict)
    """Index of a weight tied across stages → the stages that hold it."""

    @classmethod
    def plan(cls, recipe: Any, replicas: int, sharded: bool,
             tied_holders: dict[int, int] | None = None) -> StepGuard | None:
        """The guard for a run, or None where a step needs none (no fp16, no clip)."""
        train, clip = recipe.train, recipe.optimizer.clip_norm
        scale = (LossScale(train.loss_scale, train.loss_scale_growth_steps)
                 if train.precision == "fp16" else None)
        if scale is None and clip <= 0:
            return None
        # A ZeRO-1 shard is one flat gradient: its index says nothing of tied weights.
        tied = {} if sharded else dict(tied_holders or {})
        return cls(scale, clip, 1 if sharded else replicas, tied)

    @property
    def scale(self) -> float:
        """What the loss is multiplied by before backward (1 without fp16)."""
        return self.loss_scale.scale if self.loss_scale is not None else 1.0

    def weight(self, index: int) -> float:
        """What gradient `index`'s sum of squares is multiplied by before the job's sum."""
        return 1.0 / (self.copies * self.tied_holders.get(index, 1))

    def clip_coefficient(self, total_squares: float) -> float:
        """The factor the gradients are multiplied by (1: under the clip, or no clip)."""
        if self.clip_norm <= 0:
            return 1.0
        return min(1.0, self.clip_norm / (math.sqrt(total_squares) + EPSILON))

    def update(self, finite: bool) -> bool:
        """After the step, on the host: the loss scale's rules; whether the step applied."""
        return self.loss_scale.update(finite) if self.loss_scale is not None else True

    def state(self) -> dict[str, Any]:
        return {"loss_scale": self.loss_scale.state()} if self.loss_scale is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.loss_scale is not None and "loss_scale" in state:
            self.loss_scale.load_state(state["loss_scale"])

    def report(self) -> dict[str, Any]:
        if self.loss_scale is None:
            return {"clip_norm": self.clip_norm}
        return {"clip_norm": self.clip_norm, "loss_scale": self.loss_scale.scale,
                "skipped_steps": self.loss_scale.skipped}
