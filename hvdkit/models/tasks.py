"""What a model is trained to do: its loss and metrics, named once for every framework.

The trainer and the step runners read a task's metric names; each adapter's `losses.py`
computes them with its framework. A step reports the mean `loss` and the `accuracy` of its
batch; evaluation sums `loss_sum`, `correct` and `count` over the test set, so the test metrics
are exact over all ranks.

    classification    softmax cross-entropy on logits (labels: one class per sample), accuracy
    language_model    next-token cross-entropy (labels: the next token at every position),
                      next-token accuracy, and test_perplexity = exp(test loss per token)

The task follows the data (`task_for`). A model whose outputs are probabilities (it ends in a
softmax: `outputs="probabilities"`) is trained on their log, which is cross-entropy exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Task:
    name: str
    step_metrics: tuple[str, ...]
    """What a training step reports, averaged over its batch."""
    eval_sums: tuple[str, ...]
    """What an evaluation batch sums (the last one is the count it averages over: samples,
    or tokens for a language model)."""
    outputs: str = "logits"
    """What the model outputs: `logits`, or `probabilities` (a softmax's; their log is used)."""

    @property
    def per_token(self) -> bool:
        """Labels are one per position of a sequence (language modelling), not per sample."""
        return self.name == "language_model"

    def test_metrics(self, sums: list[float]) -> dict[str, float]:
        """The test metrics from the eval sums added up over every rank."""
        loss_sum, correct, count = sums
        metrics = {"test_loss": loss_sum / count, "test_accuracy": correct / count}
        if self.per_token:
            metrics["test_perplexity"] = math.exp(min(loss_sum / count, 700.0))
        return metrics


CLASSIFICATION = Task("classification", step_metrics=("loss", "accuracy"),
                      eval_sums=("loss_sum", "correct", "count"))
LANGUAGE_MODEL = Task("language_model", step_metrics=("loss", "accuracy"),
                      eval_sums=("loss_sum", "correct", "count"))
TASKS = {task.name: task for task in (CLASSIFICATION, LANGUAGE_MODEL)}
TEST_METRICS = ("test_loss", "test_accuracy", "test_perplexity")
"""Every test metric a task may report (the summary copies those present)."""


def task_for(data: Any, outputs: str = "logits") -> Task:
    """The task a data set asks for: its `task` attribute where it has one, else language
    modelling when the labels are sequences (samples x positions), else classification."""
    name = getattr(data, "task", None)
    if name is None:
        name = "language_model" if getattr(data, "y_train", None) is not None \
            and data.y_train.ndim == 2 else "classification"
    return replace(TASKS[name], outputs=outputs)
