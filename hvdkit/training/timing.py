"""Throughput across all ranks: samples every rank processed ÷ time between two barriers.

The trainer opens the window after `train.timing_warmup_steps` steps (tracing, allocation and
the first negotiation stay out), closes it after the last step, and leaves evaluation out.
Both ends are barriers (an allreduce), so the window is the same span on every rank, and the
samples are summed over the ranks, not taken as rank 0's rate times N.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

Allreduce = Callable[..., np.ndarray]


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
        local = np.array([self.samples, self.steps, seconds, self.step_seconds, comm, 1.0])
        total = self.allreduce(local, op="sum", name="hvdkit.training.timing")
        ranks = total[5]
        result = {
            "samples": int(total[0] + 0.5),
            "steps": int(total[1] / ranks + 0.5),
            "seconds": float(total[2] / ranks),
            "step_seconds": float(total[3] / ranks),
            "samples_per_sec": float(total[0] / max(total[2] / ranks, 1e-12)),
        }
        if self.comm_clock and np.isfinite(total[4]):
            result["comm_seconds"] = float(total[4] / ranks)
        return result
