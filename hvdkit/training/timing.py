"""Throughput across all ranks: samples every rank processed ÷ time between two barriers.

The trainer opens the window after `train.timing_warmup_steps` steps (tracing, allocation and
the first negotiation stay out), closes it after the last step, and leaves evaluation out.
Both ends are barriers (an allreduce), so the window is the same span on every rank, and the
samples are summed over the ranks, not taken as rank 0's rate times N. `step_sd` is the
ranks' step-to-step spread (`robust_sd` of each rank's recent steps, root-mean-square over
the ranks): what a synchronous step loses waiting for the slowest rank grows with it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Allreduce = Callable[..., np.ndarray]


RECENT_STEPS = 4096
"""Step times kept for their spread (the last ones of the window)."""


def robust_sd(values: Sequence[float]) -> float:
    """The spread of `values` as a normal distribution's standard deviation, from the
    interquartile range (÷ 1.349): a rare long pause (a collection, a checkpoint) does not
    swell it as it would the plain one."""
    if len(values) < 4:
        return 0.0
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q3 - q1) / 1.349


class ThroughputWindow:
    """Counts the samples and seconds of the timed part of training (see the module doc)."""

    def __init__(self, allreduce: Allreduce, warmup_steps: int, total_steps: int,
                 comm_clock: Callable[[], float] | None = None) -> None:
        self.allreduce = allreduce
        self.open_at = min(warmup_steps, max(total_steps - 1, 0))
        self.comm_clock = comm_clock
        self.started: float | None = None
        self.paused = 0.0
        self.samples = 0
        self.steps = 0
        self.step_seconds = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_STEPS)
        self._comm0 = 0.0

    def _barrier(self) -> float:
        # Named: after hvd.join (uneven data) ranks have made different numbers of calls.
        self.allreduce(np.zeros(1), op="sum", name="hvdkit.barrier")
        return time.perf_counter()

    def before_step(self, step: int) -> None:
        """Open the window (a barrier) when `step` is the first timed step."""
        if self.started is None and step == self.open_at:
            self._comm0 = self.comm_clock() if self.comm_clock else 0.0
            self.started = self._barrier()

    def after_step(self, samples: int, seconds: float) -> None:
        if self.started is not None:
            self.samples += samples
            self.steps += 1
            self.step_seconds += seconds
            self.recent.append(seconds)

    def pause(self) -> float:
        return time.perf_counter()

    def resume(self, paused_at: float) -> None:
        """Leave the span since `pause()` (evaluation) out of the window."""
        if self.started is not None:
            self.paused += time.perf_counter() - paused_at

    def close(self) -> dict[str, Any]:
        """End barrier; returns the totals over all ranks (the same dict on every rank)."""
        if self.started is None:
            return {}
        comm = (self.comm_clock() - self._comm0) if self.comm_clock else float("nan")
        seconds = self._barrier() - self.started - self.paused
        local = np.array([self.samples, self.steps, seconds, self.step_seconds, comm, 1.0,
                          robust_sd(self.recent) ** 2])
        total = self.allreduce(local, op="sum", name="hvdkit.training.timing")
        ranks = total[5]
        result = {
            "samples": int(total[0] + 0.5),
            "steps": int(total[1] / ranks + 0.5),
            "seconds": float(total[2] / ranks),
            "step_seconds": float(total[3] / ranks),
            "samples_per_sec": float(total[0] / max(total[2] / ranks, 1e-12)),
            "step_sd": float(np.sqrt(total[6] / ranks)),
        }
        if self.comm_clock and np.isfinite(total[4]):
            result["comm_seconds"] = float(total[4] / ranks)
        return result
