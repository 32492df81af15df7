"""What a model is trained to do: its loss and metrics, named once for every framework.

The trainer and the step runners read a task's metric names; each adapter's `losses.py`
computes them with its framework. Classification today: softmax cross-entropy on logits, and
accuracy. A step reports the mean `loss` and the `accuracy` of its batch; evaluation sums
`loss_sum`, `correct` and `count` over the test set, so the test metrics are exact over all
ranks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    step_metrics: tuple[str, ...]
    """What a training step reports, averaged over its batch."""
    eval_sums: tuple[str, ...]
    """What an evaluation batch sums (the last one is the count it averages over)."""

    def test_metrics(self, sums: list[float]) -> dict[str, float]:
        """The test metrics from the eval sums added up over every rank."""
        loss_sum, correct, count = sums
        return {"test_loss": loss_sum / count, "test_accuracy": correct / count}


CLASSIFICATION = Task("classification", step_metrics=("loss", "accuracy"),
                      eval_sums=("loss_sum", "correct", "count"))
TASKS = {task.name: task for task in (CLASSIFICATION,)}
