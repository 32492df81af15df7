"""The learning rate at each optimizer step: linear scaling by workers, warm-up, then decay."""

from __future__ import annotations

import math

from hvdkit.config import OptimizerConfig


def learning_rate(
    config: OptimizerConfig, step: int, steps_per_epoch: int, total_steps: int, workers: int
) -> float:
    """lr for optimizer step `step` (0-based) of a run of `total_steps` steps."""
    peak = config.lr * (workers if config.scale_by_world else 1)
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        # Ramp from the one-worker lr to the peak, as in Goyal et al. (2017).
        return config.lr + (peak - config.lr) * (step + 1) / warmup
    if config.schedule == "cosine":
        done = (step - warmup) / max(1, total_steps - warmup)
        return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    if config.schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        return peak * config.step_gamma ** (epoch // config.step_every_epochs)
    return peak
