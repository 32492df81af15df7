"""Your own PyTorch model: its type, and a probe forward (see hvdkit.models.usermodel)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch.models import to_channels_first
from hvdkit.models.builders import call_user
from hvdkit.models.usermodel import check_framework, failure_hint

EXPECTED = "an nn.Module, or a function (input_shape, num_classes) -> nn.Module"


def check_model_type(model: Any, what: str) -> None:
    if not isinstance(model, nn.Module):
        check_framework(model, "torch", what, "an nn.Module")


def as_model(model: Any, input_shape: tuple[int, ...], num_classes: int,
             what: str = "the model") -> nn.Module:
    """`model` itself, or what it builds when it is a factory."""
    if isinstance(model, nn.Module):
        return model
    if callable(model) and not hasattr(model, "trainable_variables"):  # not a Keras model
        model = call_user(model, f"{what} factory", tuple(input_shape), num_classes)
        check_model_type(model, f"{what} factory's result")
        return model
    check_framework(model, "torch", what, EXPECTED)
    raise AssertionError("unreachable")


@torch.no_grad()
def probe(model: nn.Module, sample: np.ndarray, device: str, channels_first: bool,
          what: str = "the model") -> np.ndarray:
    """The model's outputs on a few samples (evaluation mode, no state changed), or one line
    saying why it failed on them."""
    training = model.training
    x = torch.from_numpy(np.ascontiguousarray(sample)).to(device)
    if channels_first and x.ndim == 4:
        x = to_channels_first(x)
    try:
        out = model.eval()(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise failure_hint(exc, tuple(x.shape[1:]), channels_first, "torch", what) from None
    finally:
        model.train(training)
    return out.float().cpu().numpy()
