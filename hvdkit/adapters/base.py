"""The contract between the framework-free code and a framework: one adapter per framework.

The trainer owns the loop and `hvdkit.parallel` owns the strategies; an adapter owns the
mechanics of one framework, and declares every member they use: in four roles
(hvdkit.adapters.roles) that `Adapter` here composes. It is applied in order:

    adapter.init(layout, threads, device)         Horovod, process sets, threads, device
    model = adapter.build_model(...)              the whole model, seeded (one path)
    parallelize(adapter, layout, model, ...)      placement -> pipeline stage -> exchange:
        adapter.keep(parts, devices)              this rank's parts on their devices (or
        adapter.keep_chunks(chunks, device)       its chunks, with virtual stages)
        adapter.make_optimizer(recipe.optimizer)
        adapter.use_exchange(plan)                how replicas' gradients are combined
    adapter.train_step(x, y, lr) / forward / backward (/ backward_weights) per micro-batch
                                                  and chunk in a pipeline

Every array that crosses the boundary is numpy, except step metrics, which stay on the device
until `read_metrics` (no host synchronisation per step), and batches from `stage_batch`.
"""

from __future__ import annotations

import importlib
from typing import Any

from hvdkit.adapters.roles import (
    PROCESS_SETS,
    ExchangeHooks,
    ModelAndStep,
    PipelineStageOps,
    StateAndCollectives,
)
from hvdkit.errors import UserError
from hvdkit.models.tasks import CLASSIFICATION, Task

__all__ = ["FRAMEWORKS", "PROCESS_SETS", "Adapter", "ExchangeHooks", "ModelAndStep",
           "PipelineStageOps", "StateAndCollectives", "get_adapter", "load_framework"]

# framework name → module that defines `Adapter` (imported only when chosen).
FRAMEWORKS = {"torch": "hvdkit.adapters.torch", "tensorflow": "hvdkit.adapters.tensorflow"}


class Adapter(ModelAndStep, PipelineStageOps, ExchangeHooks, StateAndCollectives):
    """One framework's mechanics. Abstract members every framework implements; the others
    have a default here."""

    framework: str = ""
    hvd: Any = None
    """The framework's Horovod module (`horovod.torch`, `horovod.tensorflow`)."""
    input_normalization: Any = None
    """(mean, std) per channel where input batches are uint8 images to normalise on the device
    (set by the trainer from the data, hvdkit.data.images); None: batches are model-ready."""
    split_backward: bool = False
    """Set by a pipeline whose schedule splits each backward (zb-h1): `backward` then computes
    only the input's gradient, and `backward_weights` the weights' later, so `forward` keeps
    what both need."""

    def __init__(self) -> None:
        self.threads = 0
        """Intra-op threads of this rank (set by `init`)."""
        self.device = "cpu"
        """This rank's device, in the framework's spelling (set by `init`, then by `keep`)."""
        self.task: Task = CLASSIFICATION
        """What the model is trained to do (the trainer sets it from the data; `build_model`
        notes whether the model outputs logits or probabilities)."""
        self.input_dtype = "float32"
        """The data's input dtype (int64 for token ids), set by the trainer."""
        self.channels_first = False
        """model.channels_first: image batches reach the model as (N, C, H, W)."""
        self.tied: Any = None
        """Gradients of weights shared with other pipeline stages, summed across them before
        each update (hvdkit.parallel.tied.TiedGradients), or None."""
        self.precision, self.compile, self.memory_format = "fp32", False, "auto"
        self.exchange: Any = None
        """The gradient exchange in use (adapters/<framework>/exchange.py), set by
        `use_exchange`: the only thing the adapter knows of how replicas combine."""


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
