"""PyTorch state as numpy and plain Python, for checkpoints and elastic snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(value: Any) -> Any:
    """A copy of a nested state dict with every tensor turned into a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_numpy(v) for v in value)
    return value


def to_torch(value: Any) -> Any:
    """The inverse of `to_numpy`."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: to_torch(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_torch(v) for v in value)
    return value
