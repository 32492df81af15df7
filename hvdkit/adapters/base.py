"""The contract between the one training loop and a framework.

The trainer owns the loop; an adapter owns the mechanics of one framework: Horovod's set-up,
the model, the step functions, and the state. Every array that crosses the boundary is numpy.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from hvdkit.errors import UserError
from hvdkit.recipe import Recipe
from hvdkit.world import World

# framework name → module that defines `Adapter` (imported only when chosen).
FRAMEWORKS = {"torch": "hvdkit.adapters.torch", "tensorflow": "hvdkit.adapters.tensorflow"}


class Adapter(Protocol):
    framework: str

    def init(self, threads: int = 0) -> World:
        """Start Horovod, pin intra-op threads (0: cores ÷ local ranks) and return the layout."""

    def build(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
              model: Any = None) -> None:
        """Build (or take) the model, the optimizer, the loss, and the data-parallel wrapping."""

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, float]:
        """One optimizer step on this rank's batch; returns this rank's loss and accuracy."""

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Sums over the batch: `loss_sum`, `correct`, `count` (summed across ranks later)."""

    def broadcast_state(self, root_rank: int = 0) -> None:
        """Make every rank's parameters and optimizer state equal to the root's."""

    def allreduce(self, values: np.ndarray, op: str = "average") -> np.ndarray:
        """Combine a small float array across ranks (`average` or `sum`)."""

    def state(self) -> dict[str, Any]:
        """Model and optimizer state as numpy, for checkpoints."""

    def load_state(self, state: dict[str, Any]) -> None: ...

    def parameters_as_numpy(self) -> list[np.ndarray]:
        """The trainable parameters, in the model's order."""


def get_adapter(framework: str) -> Adapter:
    """A fresh adapter for `framework`, with a clear error for an unknown or missing one."""
    if framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    try:
        module = importlib.import_module(FRAMEWORKS[framework])
    except ImportError as exc:
        raise UserError(
            f"framework {framework!r} cannot be loaded ({exc}); run `make setup`"
        ) from None
    return module.Adapter()
