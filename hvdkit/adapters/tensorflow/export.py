"""TensorFlow export: the recipe's Keras model with a checkpoint's weights, as a .keras file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.config import Recipe


def export_model(recipe: Recipe, state: dict[str, Any], input_shape: tuple[int, ...],
                 num_classes: int, out: Path) -> Path:
    model = MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)
    for variable, value in zip(model.variables, state["model"], strict=True):
        variable.assign(value)
    path = out / "model.keras"
    model.save(path)  # keras.saving.load_model(path) needs neither hvdkit nor Horovod
    return path
