"""The task's loss and metrics in PyTorch (hvdkit.tasks): one place for every step and stage."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hvdkit.tasks import Task


def loss_and_correct(task: Task, outputs: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean loss (differentiable) and its number of correct predictions."""
    loss = nn.functional.cross_entropy(outputs, labels)
    return loss, (outputs.detach().argmax(1) == labels).sum()


@torch.no_grad()
def eval_sums(task: Task, outputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """`task.eval_sums` over the batch: summed loss, correct predictions, count."""
    loss = nn.functional.cross_entropy(outputs.float(), labels, reduction="sum")
    correct = (outputs.argmax(1) == labels).sum()
    return np.array([loss.item(), correct.item(), len(labels)], dtype=np.float64)
