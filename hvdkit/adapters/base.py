"""The contract between the one training loop and a framework.

The trainer owns the loop; an adapter owns the mechanics of one framework: Horovod's set-up,
the model, the step functions, and the state. Every array that crosses the boundary is numpy.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from hvdkit.errors import UserError
from hvdkit.recipe import ParallelConfig, Recipe
from hvdkit.world import World

# framework name → module that defines `Adapter` (imported only when chosen).
FRAMEWORKS = {"torch": "hvdkit.adapters.torch", "tensorflow": "hvdkit.adapters.tensorflow"}


class Adapter(Protocol):
    framework: str

    def init(self, threads: int = 0, device: str = "auto") -> World:
        """Start Horovod, pin intra-op threads (0: cores ÷ local ranks), choose this rank's
        device (train.device; sets `self.device`) and return the layout."""

    def build(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
              model: Any = None) -> None:
        """Build (or take) the model, the optimizer, the loss, and the data-parallel wrapping."""

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, float]:
        """One optimizer step on this rank's batch; returns this rank's loss and accuracy."""

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Sums over the batch: `loss_sum`, `correct`, `count` (summed across ranks later)."""

    def broadcast_state(self, root_rank: int = 0) -> None:
        """Make every rank's parameters and optimizer state equal to the root's."""

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        """Combine a small float array across ranks (`average` or `sum`). A `name` makes
        ranks match by name, not by call count (needed once a rank may have joined)."""

    collective_state: bool
    """True where `state` is a collective that every rank must call (a pipeline gathers its
    stages on rank 0); False where rank 0 alone calls it for a checkpoint."""

    def state(self) -> dict[str, Any]:
        """Model, optimizer and framework RNG state as numpy and plain Python, for checkpoints."""

    def load_state(self, state: dict[str, Any]) -> None: ...

    # Fault tolerance (hvdkit.checkpoint, hvdkit.parallel.elastic); optional for an adapter
    # that does not offer them (a pipeline): the trainer skips `join` where it is missing.

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """The root's picklable `obj`, on every rank."""

    def join(self) -> None:
        """Uneven data: wait until every rank is done, answering their allreduces with zeros."""

    def elastic_state(self, **values: Any) -> Any:
        """A Horovod elastic state with the model, the optimizer and `values` as attributes."""

    def elastic_run(self, func: Any) -> Any:
        """`func(state)` wrapped by the framework's `hvd.elastic.run`."""

    def parameters_as_numpy(self) -> list[np.ndarray]:
        """The trainable parameters, in the model's order."""


def load_framework(framework: str) -> Any:
    """The adapter package of `framework` (hvdkit.adapters.<name>), with a clear error for an
    unknown or missing one."""
    if framework not in FRAMEWORKS:
        raise UserError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    try:
        return importlib.import_module(FRAMEWORKS[framework])
    except ImportError as exc:
        raise UserError(
            f"framework {framework!r} cannot be loaded ({exc}); run `make setup`"
        ) from None


def get_adapter(framework: str, parallel: ParallelConfig | None = None) -> Adapter:
    """A fresh adapter for `framework`, with a clear error for an unknown or missing one.
    Pipeline stages or a device placement in `parallel` get the framework's PipelineAdapter."""
    module = load_framework(framework)
    if parallel is not None and (parallel.stages > 1 or parallel.placement):
        return module.PipelineAdapter(parallel)
    return module.Adapter()
