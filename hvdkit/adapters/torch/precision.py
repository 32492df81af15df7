"""PyTorch's training-step options: autocast (bf16, fp16), the step guard between Horovod's
exchange and the update (unscale, global-norm clip, skip on overflow; the rules are
hvdkit.parallel.loss_scale's), `torch.compile` and the channels-last memory format.

The ring's step follows Horovod's documented AMP pattern: `optimizer.synchronize()`, then
unscale and clip here, then the update under `optimizer.skip_synchronize()`. The scale is
hvdkit's own, not `torch.amp.GradScaler`'s: GradScaler decides overflow per process, and a
ZeRO-1 shard or a pipeline stage sees only its part of the gradients, so the decision must be
one allreduce over every rank (the sum of squares, which is non-finite where any gradient is).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hvdkit.parallel.loss_scale import StepGuard

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> Any:
    """Forward and loss in `precision` on `device`'s type (CPU bf16/fp16 included)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


@torch.no_grad()
def guard_gradients(guard: StepGuard, grads: Sequence[torch.Tensor | None], hvd: Any) -> bool:
    """Unscale `grads` in place, sum their squares over the whole job (one allreduce of one
    number over every rank), clip them to the global norm; whether they are finite, which is
    the same answer on every rank. Records the step in the loss scale."""
    inv = 1.0 / guard.scale
    local: torch.Tensor | None = None
    for i, g in enumerate(grads):
        if g is None:
            continue
        if inv != 1.0:
            g.mul_(inv)
        squares = g.double().square().sum() * guard.weight(i)
        local = squares if local is None else local + squares
    if local is None:
        local = torch.zeros((), dtype=torch.float64)
    total = float(hvd.allreduce(local.reshape(1).cpu(), op=hvd.Sum,
                                name="hvdkit.grad_squares").item())
    finite = math.isfinite(total)
    coefficient = guard.clip_coefficient(total) if finite else 1.0
    if coefficient < 1.0:
        for g in grads:
            if g is not None:
                g.mul_(coefficient)
    guard.update(finite)
    return finite


def guarded_update(guard: StepGuard | None, params: Sequence[nn.Parameter], hvd: Any,
                   update: Callable[[], Any]) -> None:
    """`update()` (the optimizer's step) unless the guard finds the gradients non-finite."""
    if guard is None or guard_gradients(guard, [p.grad for p in params], hvd):
        update()


def memory_format(setting: str, device: torch.device) -> torch.memory_format:
    """model.memory_format resolved: `auto` is channels-last on a GPU, contiguous elsewhere."""
    if setting == "channels_last" or (setting == "auto" and device.type == "cuda"):
        return torch.channels_last
    return torch.contiguous_format


def prepare(modules: list[nn.Module], device: torch.device, setting: str,
            compile: bool) -> list[Any]:
    """Each module in the memory format asked for (4-D weights only: an image batch stored
    NHWC and permuted to NCHW is channels-last already), and what the training forward calls:
    the module, or `torch.compile` of it (evaluation runs the module itself, so it does not
    compile a second graph)."""
    fmt = memory_format(setting, device)
    if fmt is torch.channels_last:
        for module in modules:
            module.to(memory_format=fmt)
    return [torch.compile(m) if compile else m for m in modules]
