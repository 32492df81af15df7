"""PyTorch export: the recipe's model with a checkpoint's weights, as a `state_dict` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hvdkit.adapters.torch.models import MODELS
from hvdkit.config import Recipe


def build_model(recipe: Recipe, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The recipe's model, freshly built (load a saved `state_dict` into it)."""
    return MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)


def export_model(recipe: Recipe, state: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, out: Path) -> Path:
    model = build_model(recipe, input_shape, num_classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state["model"].items()})
    path = out / "model.pt"
    torch.save(model.state_dict(), path)  # tensors only: torch.load(weights_only=True) reads it
    return path
