"""What the trainer drives each step: a step runner over this rank's share of the model.

`LocalStep` runs the adapter's whole step (micro-batches of `parallel.accumulation`, the
exchange, the update) on a model kept whole or placed over devices; `PipelineStep`
(hvdkit.parallel.pipeline_step) runs a stage's schedule of micro-batches. Both give the trainer
the same members, so the one loop drives every layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hvdkit.layout import ParallelLayout


class LocalStep:
    """The step on this rank's whole model; every rank holds all of it (rank 0 saves it)."""

    def __init__(self, adapter: Any, layout: ParallelLayout) -> None:
        self.adapter, self.layout = adapter, layout

    @property
    def collective_state(self) -> bool:
        """True where `state` is a collective every rank calls (the exchange spreads the
        optimizer's state over the ranks); False where rank 0 alone calls it."""
        return self.adapter.exchange.collective_state

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """Run in the data prefetch thread: the batch as the adapter's step takes it (its
        tensors, copied to their devices while earlier steps run)."""
        return self.adapter.stage_batch(x, y)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> Any:
        """One optimizer step on this rank's batch; its metrics stay on the device."""
        return self.adapter.train_step(x, y, lr, self.layout.accumulation)

    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        """Rows of the task's step metrics (loss, accuracy) for these steps, on the host."""
        return self.adapter.read_metrics(handles)

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The task's eval sums over this batch."""
        return self.adapter.eval_step(x, y)

    def broadcast_state(self) -> None:
        """Every replica starts from rank 0's parameters and optimizer state."""
        self.adapter.broadcast_state(root_rank=0)

    def average_statistics(self) -> None:
        """The replicas' BatchNorm statistics averaged (a collective, before an evaluation or
        a checkpoint)."""
        self.adapter.average_statistics()

    def state(self) -> dict[str, Any] | None:
        return self.adapter.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.adapter.load_state(state)

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        return self.adapter.broadcast_object(obj, root_rank=root_rank, name=name)

    def comm_seconds(self) -> float:
        """Seconds this rank waited for communication in its steps (NaN: not measurable)."""
        return self.adapter.exchange.comm_seconds()

    def epoch_metrics(self) -> dict[str, Any]:
        """Layout-specific metrics for the epoch's logs (a pipeline's per-stage figures)."""
        return {}

    def report(self) -> dict[str, Any]:
        """What the run's summary says of the exchange (sync, bytes per step)."""
        return self.adapter.exchange.report()
