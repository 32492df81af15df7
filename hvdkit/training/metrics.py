"""The steps' metrics between two flushes, and the flush that brings them back.

A step's metrics stay on the device (the handle `runner.train_step` returns), beside its wall
time and learning rate, until `log_every_steps` steps have gathered; `flush_metrics` reads
them back and averages them across ranks in one allreduce, which also carries the stop check
and the input path's sums, then hands each step's logs to the callbacks (hvdkit.trainer's
loop calls it). Kept out of the loop's module so it stays short.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hvdkit.runtime.stop import StepBoundaryStop
from hvdkit.training.inputmeter import WIDTH as INPUT_WIDTH

STEP_METRICS = ("loss", "accuracy", "step_time")


class PendingSteps:
    """The steps run since the last flush, one entry each: their metrics' handles (still on
    the device), wall times and learning rates."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.times: list[float] = []
        self.lrs: list[float] = []

    def __len__(self) -> int:
        return len(self.handles)

    def add(self, handle: Any, seconds: float, lr: float) -> None:
        self.handles.append(handle)
        self.times.append(seconds)
        self.lrs.append(lr)

    def clear(self) -> None:
        self.handles, self.times, self.lrs = [], [], []


def flush_metrics(trainer: Any, pending: PendingSteps, step: int, epoch: int) -> list[float]:
    """Read `trainer`'s buffered step metrics back from the device, average them across ranks
    in one allreduce, then log them; `pending` is emptied, the steps' losses returned.

    The buffer always has `log_every_steps` rows and a count column, so every rank sends
    the same shape, and zeros from a rank that has joined (uneven data) do not count. More
    columns carry the stop check (hvdkit.runtime.stop): once any rank has a request,
    every rank ends the loop at this step. The last ones carry the input path's sums since
    the last flush (hvdkit.training.inputmeter).
    """
    width = len(STEP_METRICS)
    rows = len(pending)
    stop = slice(width + 1, width + 1 + StepBoundaryStop.WIDTH)
    buffer = np.zeros((max(trainer.recipe.train.log_every_steps, rows),
                       stop.stop + INPUT_WIDTH))
    if rows:
        buffer[:rows, : width - 1] = trainer.runner.read_metrics(pending.handles)
        buffer[:rows, width - 1] = pending.times
        buffer[:rows, width] = 1.0
    buffer[0, stop] = trainer.stop.payload()
    buffer[0, stop.stop :] = trainer.input_meter.interval()
    total = trainer.adapter.allreduce(buffer, op="sum", name="hvdkit.metrics")
    trainer.stop.agree(total[0, stop])
    first = step - rows
    inputs = trainer.input_meter.add(total[0, stop.stop :],
                                     first >= trainer.recipe.train.timing_warmup_steps)
    losses = []
    for i, lr in enumerate(pending.lrs):
        row = total[i, :width] / max(total[i, width], 1.0)
        logs = dict(zip(STEP_METRICS, map(float, row), strict=True))
        logs.update(epoch=epoch, lr=lr, total_steps=trainer.total_steps,
                    samples_per_sec=trainer.loader.global_batch / logs["step_time"], **inputs)
        trainer.emit("on_step_end", first + i, logs)
        losses.append(logs["loss"])
    pending.clear()
    return losses
