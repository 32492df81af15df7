"""The task's loss and metrics in PyTorch (hvdkit.models.tasks): one place for every step
and stage."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hvdkit.models.tasks import Task

EPS = 1e-7  # the smallest probability a softmax output counts with (as Keras clips)


def _flat(task: Task, outputs: torch.Tensor,
          labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (rows x classes) and labels (rows): a language model's positions become rows,
    and a softmax's probabilities their log."""
    if task.outputs == "probabilities":
        outputs = outputs.clamp_min(EPS).log()
    if outputs.ndim > 2:
        outputs, labels = outputs.reshape(-1, outputs.shape[-1]), labels.reshape(-1)
    return outputs, labels


def loss_and_correct(task: Task, outputs: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean loss (differentiable) and its number of correct predictions, in
    samples (a language model's correct tokens ÷ positions, so that ÷ samples is accuracy)."""
    positions = labels[0].numel() if task.per_token else 1
    logits, flat = _flat(task, outputs, labels)
    loss = nn.functional.cross_entropy(logits, flat)
    correct = (logits.detach().argmax(1) == flat).sum()
    return loss, correct / positions if task.per_token else correct


@torch.no_grad()
def eval_sums(task: Task, outputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """`task.eval_sums` over the batch: summed loss, correct predictions, count (samples, or
    tokens for a language model)."""
    logits, flat = _flat(task, outputs.float(), labels)
    loss = nn.functional.cross_entropy(logits, flat, reduction="sum")
    correct = (logits.argmax(1) == flat).sum()
    return np.array([loss.item(), correct.item(), len(flat)], dtype=np.float64)
