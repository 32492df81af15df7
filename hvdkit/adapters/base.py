"""The contract between the framework-free code and a framework: one adapter per framework.

The trainer owns the loop and `hvdkit.parallel` owns the strategies; an adapter owns the
mechanics of one framework, and declares here every member they use. It is applied in order:

    adapter.init(layout, threads, device)         Horovod, process sets, threads, device
    model = adapter.build_model(...)              the whole model, seeded (one path)
    parallelize(adapter, layout, model, ...)      placement -> pipeline stage -> exchange:
        adapter.keep(parts, devices)              this rank's parts on their devices
        adapter.make_optimizer(recipe.optimizer)
        adapter.use_exchange(exchange)            how replicas' gradients are combined
    adapter.train_step(x, y, lr) / forward / backward per micro-batch in a pipeline

Every array that crosses the boundary is numpy, except step metrics, which stay on the device
until `read_metrics` (no host synchronisation per step).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from hvdkit.errors import UserError
from hvdkit.recipe import OptimizerConfig, Recipe
from hvdkit.tasks import CLASSIFICATION, Task

# framework name → module that defines `Adapter` (imported only when chosen).
FRAMEWORKS = {"torch": "hvdkit.adapters.torch", "tensorflow": "hvdkit.adapters.tensorflow"}


class Adapter(ABC):
    """One framework's mechanics. Abstract members every framework implements; the others
    have a default here."""

    framework: str = ""
    hvd: Any = None
    """The framework's Horovod module (`horovod.torch`, `horovod.tensorflow`)."""

    def __init__(self) -> None:
        self.threads = 0
        """Intra-op threads of this rank (set by `init`)."""
        self.device = "cpu"
        """This rank's device, in the framework's spelling (set by `init`, then by `keep`)."""
        self.task: Task = CLASSIFICATION
        self.exchange: Any = None
        """The gradient exchange in use (`hvdkit.parallel.exchange`), set by `use_exchange`."""

    # -- set-up ---------------------------------------------------------------------------

    @abstractmethod
    def init(self, process_sets: list[list[int]], threads: int, device: str,
             exclusive_gpu: bool) -> tuple[int, ...]:
        """Start Horovod with these static process sets (rank lists), pin intra-op threads
        (0: cores ÷ local ranks), choose this rank's device for train.device (`exclusive_gpu`:
        replicas average over NCCL, which needs a GPU each); return (rank, size, local_rank,
        local_size)."""

    @abstractmethod
    def build_model(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
                    model: Any = None) -> Any:
        """The whole model, built with the recipe's seed (the same on every rank): the
        recipe's, or the user's `model` (a model of this framework, or a factory of one)."""

    @abstractmethod
    def model_layers(self, model: Any) -> list[Any]:
        """The model's layers in order, for a cut into parts (placement, pipeline stages)."""

    @abstractmethod
    def layer_has_params(self, layer: Any) -> bool: ...

    @abstractmethod
    def profile_layers(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                       timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        """Per layer: parameter count, output feature shape, and (if `timed`) the seconds of
        its forward and backward on `rows` samples, leaving the layer unchanged."""

    @abstractmethod
    def keep(self, parts: list[list[Any]], devices: list[str]) -> None:
        """Keep these layers as this rank's model, part i on `devices[i]` (any spelling,
        hvdkit.parallel.placement). A single part holding one layer is kept as it is."""

    @abstractmethod
    def make_optimizer(self, config: OptimizerConfig) -> None:
        """The optimizer over the kept model's parameters."""

    def use_exchange(self, exchange: Any) -> None:
        """Combine the replicas' gradients through `exchange` from the next step on."""
        self.exchange = exchange
        exchange.attach(self)

    # -- one step on this rank's whole model (no pipeline) --------------------------------

    @abstractmethod
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, accumulation: int) -> Any:
        """Forward and backward over `accumulation` micro-batches, the exchange, the update.
        Returns this step's metrics on the device (see `read_metrics`)."""

    @abstractmethod
    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        """Steps' metrics (`train_step`'s results) as numpy rows of the task's step_metrics."""

    @abstractmethod
    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The task's eval sums over this batch (`Task.eval_sums`)."""

    # -- a pipeline stage's micro-batches (hvdkit.parallel.pipeline_step) -----------------

    @abstractmethod
    def zero_grad(self, lr: float) -> None:
        """Start a step: gradients to zero, the learning rate set."""

    @abstractmethod
    def forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None, scale: float,
                input_grad: bool) -> np.ndarray:
        """A micro-batch forward, keeping what backward needs (and the input's gradient where
        `input_grad`). Without labels: the output (numpy). With labels (the last stage): the
        micro-batch's [mean loss, correct], after taking `loss × scale` as what backward
        differentiates."""

    @abstractmethod
    def backward(self, mb: int, grad: np.ndarray | None) -> np.ndarray | None:
        """A micro-batch backward (accumulating gradients); the input's gradient, or None where
        forward was not asked for it."""

    @abstractmethod
    def apply_gradients(self) -> None:
        """After the last backward: the exchange combines the replicas' gradients and the
        optimizer steps."""

    @abstractmethod
    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """The kept model's output in evaluation mode."""

    @abstractmethod
    def output_sums(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The task's eval sums for outputs computed by `infer` (a pipeline's last stage)."""

    # -- what the gradient exchanges use (hvdkit.parallel.exchange, .ps) ------------------

    @abstractmethod
    def optimizer_step(self) -> None:
        """The optimizer's update with the gradients as they are now."""

    @abstractmethod
    def gradients_as_numpy(self) -> list[np.ndarray]:
        """The accumulated gradients of the kept parameters, in order."""

    @abstractmethod
    def set_gradients(self, arrays: list[np.ndarray]) -> None: ...

    @abstractmethod
    def assign_parameters(self, arrays: list[np.ndarray]) -> None: ...

    @abstractmethod
    def parameters_as_numpy(self) -> list[np.ndarray]:
        """The kept trainable parameters, in order."""

    @abstractmethod
    def ring_reducer(self, op: str, compression: str, process_set_ranks: list[int] | None,
                     passes: int) -> Any:
        """Install Horovod ring-allreduce of the gradients over these ranks (None: all), to
        fire after `passes` backward passes; returns a counter of the bytes handed to it."""

    # -- collectives, state, fault tolerance ----------------------------------------------

    @abstractmethod
    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        """Combine a small float array across all ranks (`average` or `sum`). A `name` makes
        ranks match by name, not by call count (needed once a rank may have joined)."""

    @abstractmethod
    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """The root's picklable `obj`, on every rank."""

    @abstractmethod
    def broadcast_state(self, root_rank: int = 0) -> None:
        """Make every rank's parameters and optimizer state equal to the root's."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The kept model, optimizer and framework RNG state as numpy and plain Python."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...

    def join(self) -> None:
        """Uneven data: wait until every rank is done, answering their allreduces with zeros."""
        self.hvd.join()

    def elastic_state(self, **values: Any) -> Any:
        """A Horovod elastic state with the model, the optimizer and `values` as attributes."""
        raise UserError(f"elastic training is not available for {self.framework}")

    def elastic_run(self, func: Any) -> Any:
        """`func(state)` wrapped by the framework's `hvd.elastic.run`."""
        return self.hvd.elastic.run(func)


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


def get_adapter(framework: str) -> Adapter:
    """A fresh adapter for `framework`, with a clear error for an unknown or missing one."""
    return load_framework(framework).Adapter()
