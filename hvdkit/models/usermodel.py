"""Models as users write them, framework-free: what their inputs and outputs are.

    input_shape = model_input_shape((32, 32, 3), channels_first=True)   # (3, 32, 32)
    output_kind(outputs)        # "probabilities" for rows of a softmax, else "logits"

Each adapter's `usermodel.py` adds the framework's part: the model's type (an `nn.Module` for
PyTorch, a `keras.Model` for TensorFlow, or a factory of one), and a probe forward that turns
a failure into one line with the likely fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hvdkit.errors import UserError

FRAMEWORK_OF_MODULE = {"torch": "torch", "keras": "tensorflow", "tensorflow": "tensorflow",
                       "tf_keras": "tensorflow"}


MODEL_CLASSES = {"torch": ("torch.nn.modules.module", "Module"),
                 "tensorflow": ("keras.src.models.model", "Model")}
"""Where each framework's model class is defined: a model's type is checked by its classes'
modules, without importing the framework (hvdkit.launch.preflight)."""

EXPECTED = {"torch": "an nn.Module, or a function (input_shape, num_classes) -> nn.Module",
            "tensorflow": "a keras.Model, or a function (input_shape, num_classes) -> "
                          "keras.Model"}


def is_model(obj: Any, framework: str) -> bool:
    """Whether `obj` is `framework`'s model (an nn.Module, a keras.Model), by its classes."""
    return any((cls.__module__, cls.__name__) == MODEL_CLASSES[framework]
               for cls in type(obj).__mro__)


def check_model_kind(obj: Any, framework: str, what: str) -> None:
    """One line unless `obj` is `framework`'s model or a factory of one, framework-free: a
    factory is left to the ranks, since calling it would start the framework here."""
    if is_model(obj, framework):
        return
    if callable(obj) and framework_of(obj) is None:
        return
    check_framework(obj, framework, what, EXPECTED[framework])


CHANNELS_FIRST_FRAMEWORKS = ("torch",)
"""Frameworks whose models take model.channels_first; Keras models always get channels last,
Keras's own convention."""


def model_input_shape(input_shape: tuple[int, ...], channels_first: bool,
                      framework: str = "torch") -> tuple[int, ...]:
    """The sample shape the model sees: images (H, W, C) become (C, H, W) with channels_first,
    on PyTorch only."""
    if channels_first and framework in CHANNELS_FIRST_FRAMEWORKS and len(input_shape) == 3:
        height, width, channels = input_shape
        return (channels, height, width)
    return tuple(input_shape)


def framework_of(obj: Any) -> str | None:
    """The framework an object's class (or a base class) comes from, if it is one we know."""
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".")[0]
        if root in FRAMEWORK_OF_MODULE:
            return FRAMEWORK_OF_MODULE[root]
    return None


def check_framework(obj: Any, framework: str, what: str, expected: str) -> None:
    """One line when `obj` is another framework's model or not a model at all."""
    other = framework_of(obj)
    if other is not None and other != framework:
        kind = "a PyTorch nn.Module" if other == "torch" else "a Keras model"
        raise UserError(f"{what} is {kind}, but this run's framework is {framework}; run it "
                        f"with --framework {other}, or give {expected}")
    raise UserError(f"{what} is a {type(obj).__module__}.{type(obj).__name__}; the "
                    f"{framework} adapter needs {expected}")


def output_kind(outputs: np.ndarray) -> str:
    """`probabilities` when every row of the last axis is non-negative and sums to 1 (a model
    ending in a softmax), else `logits`. Log-probabilities (a log-softmax) count as logits:
    cross-entropy on them is already right, since log_softmax(log p) = log p."""
    if outputs.ndim < 2 or outputs.shape[-1] < 2:
        return "logits"
    rows = np.asarray(outputs, np.float64).reshape(-1, outputs.shape[-1])
    if rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-4):
        return "probabilities"
    return "logits"


def resolve_output(setting: str, outputs: np.ndarray, classes: int, what: str) -> str:
    """The model's output kind (model.output, or detected from a probe's `outputs`), after
    checking their last axis has one entry per class."""
    if outputs.ndim < 2 or outputs.shape[-1] != classes:
        raise UserError(f"{what} gives outputs of shape {tuple(outputs.shape)}; a model for this "
                        f"data must give {classes} scores per sample (the last axis)")
    return output_kind(outputs) if setting == "auto" else setting


def failure_hint(exc: BaseException, input_shape: tuple[int, ...], channels_first: bool,
                 framework: str, what: str) -> UserError:
    """A probe forward failed: one line with the error and, for images, the layout fix."""
    first = (str(exc).strip().splitlines() or ["no detail"])[0]
    message = f"{what} fails on a batch of shape (N, {', '.join(map(str, input_shape))}): {first}"
    if len(input_shape) == 3 and framework == "torch":
        message += ("; image batches come channels last (N, H, W, C) unless the recipe sets "
                    "model.channels_first: true" if not channels_first else
                    "; model.channels_first hands image batches as (N, C, H, W): set it to "
                    "false for a model that takes (N, H, W, C)")
    return UserError(message)
