"""A pipeline stage's time and memory accounting, gathered into per-stage epoch metrics."""

from __future__ import annotations

import resource
from typing import Any

import numpy as np

from hvdkit.layout import ParallelLayout
from hvdkit.parallel.schedules import ideal_bubble


class StageMetrics:
    """Busy, CPU and wall seconds of the timed steps (the first carries tracing and
    allocation, so it is left out), and the peak micro-batches of activations held."""

    def __init__(self, layout: ParallelLayout, stage: int) -> None:
        self.layout, self.stage = layout, stage
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self.busy = self.wall = self.cpu = self.peak_bytes = 0.0
        self.timed = self.peak = 0

    def add_step(self, busy: float, cpu: float, wall: float, peak: int,
                 peak_bytes: float) -> None:
        self.steps += 1
        if self.steps > 1:
            self.busy += busy
            self.cpu += cpu
            self.wall += wall
            self.timed += 1
        self.peak = max(self.peak, peak)
        self.peak_bytes = max(self.peak_bytes, peak_bytes)

    def epoch_metrics(self, allgather: Any, bounds: list[int]) -> dict[str, Any]:
        """Per stage (averaged over replicas): busy seconds per step (forward, backward and
        optimizer) and the CPU seconds of its forwards and backwards (below the busy time when
        other processes take the core); its idle share (1 − busy ÷ step time); the peak
        micro-batches of activations held (with virtual stages: micro-batch chunks, each about
        1/v of a stage's), their MiB, and the process's peak RSS.

        The idle time splits in two. `bubble` is the schedule's: the idle share of the busiest
        stage, which sets the step time, so it is what `ideal_bubble` predicts ((p − 1) /
        (m + p − 1) for 1F1B; hvdkit.parallel.schedules.ideal_bubble).
        `imbalance` is the split's: 1 − mean busy ÷ largest busy, the share of the work the
        less loaded stages could still take (0 for a perfectly balanced split)."""
        row = [self.stage, self.busy, self.wall, self.timed, self.peak,
               self.peak_bytes,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, self.cpu]
        rows = np.array(allgather(row), dtype=np.float64)
        self.reset()
        layout = self.layout
        busy, idle, held, act, rss, cpu = [], [], [], [], [], []
        for s in range(layout.stages):
            r = rows[rows[:, 0] == s]
            steps = max(r[:, 3].sum(), 1.0)
            busy.append(float(r[:, 1].sum() / steps))
            cpu.append(float(r[:, 7].sum() / steps))
            idle.append(float(1 - r[:, 1].sum() / r[:, 2].sum()) if r[:, 2].sum() else 0.0)
            held.append(int(r[:, 4].max()))
            act.append(float(r[:, 5].max() / 2**20))
            rss.append(float(r[:, 6].max() / 2**20))
        busiest = int(np.argmax(busy))
        return {"pipeline": {
            "schedule": layout.schedule, "stages": layout.stages,
            "microbatches": layout.microbatches, "replicas": layout.replicas,
            "bounds": bounds, "bubble": idle[busiest],
            "virtual_stages": layout.virtual_stages,
            "ideal_bubble": ideal_bubble(layout.schedule, layout.stages, layout.microbatches,
                                         layout.virtual_stages),
            "imbalance": float(1 - np.mean(busy) / busy[busiest]) if busy[busiest] else 0.0,
            "stage_busy_s": busy, "stage_busy_cpu_s": cpu, "stage_idle": idle,
            "stage_peak_microbatches": held, "stage_peak_activation_mib": act,
            "stage_max_rss_mib": rss,
        }}
