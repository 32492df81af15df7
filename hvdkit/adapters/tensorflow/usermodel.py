"""Your own Keras model: its type, and a probe forward (see hvdkit.models.usermodel)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from hvdkit.models.builders import call_user
from hvdkit.models.usermodel import check_framework, failure_hint

EXPECTED = "a keras.Model, or a function (input_shape, num_classes) -> keras.Model"


def check_model_type(model: Any, what: str) -> None:
    if not isinstance(model, keras.Model):
        check_framework(model, "tensorflow", what, "a keras.Model")


def as_model(model: Any, input_shape: tuple[int, ...], num_classes: int,
             what: str = "the model") -> keras.Model:
    """`model` itself, or what it builds when it is a factory."""
    if isinstance(model, keras.Model):
        return model
    if callable(model) and not hasattr(model, "parameters"):  # not a torch module
        model = call_user(model, f"{what} factory", tuple(input_shape), num_classes)
        check_model_type(model, f"{what} factory's result")
        return model
    check_framework(model, "tensorflow", what, EXPECTED)
    raise AssertionError("unreachable")


def probe(model: keras.Model, sample: np.ndarray, device: str, channels_first: bool,
          what: str = "the model") -> np.ndarray:
    """The model's outputs on a few samples (inference mode; builds an unbuilt model), or one
    line saying why it failed on them."""
    x = sample.transpose(0, 3, 1, 2) if channels_first and sample.ndim == 4 else sample
    try:
        out = model(x, training=False)
    except (ValueError, TypeError, IndexError) as exc:
        raise failure_hint(exc, tuple(x.shape[1:]), channels_first, "tensorflow", what) \
            from None
    return np.asarray(out, dtype=np.float32)
