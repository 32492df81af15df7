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

from hvdkit.adapters.torch.models import ChannelsFirst
from hvdkit.parallel.loss_scale import StepGuard
from hvdkit.runtime.cpu import cpu_features

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


def known_bad_convolutions(module: nn.Module, isa: str) -> list[str]:
    """The convolutions of `module` whose weight gradient oneDNN gets wrong on a CPU when their
    input is channels-last (uxlfoundation/oneDNN#6035, open; torch 2.13 and 2.14): 1x1 kernels
    with a stride above 1 and fewer input channels than the kernel's block (8 floats in AVX2,
    16 in AVX-512). With one thread the process aborts (heap corruption); with more, the
    gradients are silently wrong. Measured here (AMD EPYC, AVX2): 1x1/2 and 1x1/3 with 1, 3, 4 or 7
    input channels fail; 8, 12, 15 and 20 pass, and so does every case with contiguous input."""
    block = 16 if isa == "AVX512" else 8
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
            and max(m.stride) > 1 and m.in_channels < block]


def prepare(modules: list[nn.Module], device: torch.device, setting: str, compile: bool,
            say: Callable[[str], None] = print) -> list[Any]:
    """Each module's inputs turned NHWC → NCHW in the memory format asked for (`ChannelsFirst`),
    and what the training forward calls: the module, or `torch.compile` of it (evaluation runs
    the module itself, so it does not compile a second graph). Channels-last input makes each
    convolution run channels-last (its output follows its input); the parameters stay
    contiguous, as Horovod's broadcast and allreduce require of every tensor they take, and so do
    their gradients. Channels-last on a CPU over a convolution oneDNN gets wrong is said once."""
    fmt = memory_format(setting, device)
    for module in modules:
        for part in module.modules():
            if isinstance(part, ChannelsFirst):
                part.memory_format = fmt
    if fmt is torch.channels_last and device.type == "cpu":
        bad = [name for module in modules
               for name in known_bad_convolutions(module, cpu_features().isa)]
        if bad:
            say(f"hvdkit: warning: model.memory_format channels_last on this CPU "
                f"({cpu_features().isa}): oneDNN computes wrong weight gradients (or crashes) "
                f"for 1x1 strided convolutions with few input channels (uxlfoundation/oneDNN"
                f"#6035), here {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; "
                f"use model.memory_format: contiguous (the CPU default)")
    return [torch.compile(m) if compile else m for m in modules]
