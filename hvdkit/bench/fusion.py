"""Horovod's tensor fusion, simulated: when each gradient is ready, how the background loop
fuses the ready ones into buffers each cycle, and when the last collective ends against the
backward pass (the exchange part of hvdkit.bench.perfmodel's step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_EPS = 1e-12  # seconds: float rounding, far below any modelled time


@dataclass(frozen=True)
class Horovod:
    """Horovod's fusion settings: HOROVOD_FUSION_THRESHOLD (bytes), HOROVOD_CYCLE_TIME (s)."""

    fusion_bytes: float = 128 * 1024 * 1024
    cycle: float = 1e-3


def simulate_exchange(ready: Sequence[tuple[float, float]],
                      allreduce: Callable[[float], float], fusion_bytes: float, cycle: float,
                      phase: float, backward: float,
                      on_core: Callable[[float], float] | None = None) -> tuple[float, float]:
    """(when the last gradient is reduced, when backward ends), simulating Horovod's loop.

    `ready`: (seconds of backward run when a gradient is ready, its bytes). The loop wakes at
    `phase`, then every `cycle` (or when the previous cycle's collectives end, if later),
    takes the ready gradients, fuses them in order into buffers of at most `fusion_bytes` (a
    larger one goes alone) and allreduces the buffers one after the other. `on_core`: no core
    is free for the collectives, so backward pauses while they work on the host, for
    `on_core(bytes)` seconds of each (all of it within a host; over a network backward runs
    on while the link carries the bytes); None: a core is free and backward runs on beside
    them."""
    pending = sorted((min(at, backward), size) for at, size in ready)
    clock, done, end, tick, i = 0.0, 0.0, 0.0, phase, 0
    backward_end = backward if not pending else None

    def run_backward(until: float) -> None:
        nonlocal clock, done, backward_end
        if backward_end is None and done + (until - clock) >= backward - _EPS:
            backward_end = clock + (backward - done)
        done, clock = min(backward, done + until - clock), until

    while i < len(pending):
        run_backward(tick)
        if pending[i][0] > done + _EPS:  # nothing ready: sleep to the first cycle after it
            tick += cycle * max(1, math.ceil((pending[i][0] - done) / cycle - _EPS))
            continue
        buffer = 0.0
        while i < len(pending) and pending[i][0] <= done + _EPS:
            size = pending[i][1]
            if buffer and buffer + size > fusion_bytes:
                clock = _collective(clock, buffer, allreduce, on_core, run_backward)
                buffer = 0.0
            buffer += size
            i += 1
        clock = end = _collective(clock, buffer, allreduce, on_core, run_backward)
        tick = max(clock, tick + cycle)
    if backward_end is None:
        run_backward(clock + backward - done)
    return end, float(backward_end)


def _collective(clock: float, nbytes: float, allreduce: Callable[[float], float],
                on_core: Callable[[float], float] | None,
                run_backward: Callable[[float], None]) -> float:
    """One collective from `clock`; backward runs during the part not on the core."""
    seconds = allreduce(nbytes)
    run_backward(clock + max(0.0, seconds - (on_core(nbytes) if on_core else 0.0)))
    return clock + seconds


def expected_exchange(ready: Sequence[tuple[float, float]],
                      allreduce: Callable[[float], float], horovod: Horovod, backward: float,
                      on_core: Callable[[float], float] | None = None,
                      phases: int = 8) -> tuple[float, float]:
    """`simulate_exchange` averaged over where in Horovod's cycle the step's backward
    starts (uniform: the loop's phase is not tied to the step)."""
    runs = [simulate_exchange(ready, allreduce, horovod.fusion_bytes, horovod.cycle,
                              (k + 0.5) / phases * horovod.cycle, backward, on_core)
            for k in range(phases)]
    return (sum(r[0] for r in runs) / phases, sum(r[1] for r in runs) / phases)


def readiness(backward: float, tensor_bytes: Sequence[float], early: bool,
              start: float = 0.0, fractions: Sequence[float] = ()) -> list[tuple[float, float]]:
    """When each gradient is handed to Horovod: `early` (PyTorch's hooks), each when backward
    has done its `fractions` (measured: `hvdkit.bench.gradient_ready`; forward order like the
    tensors) or, without, in reverse order of the tensors, in proportion to the bytes up to
    it; otherwise all at the backward's end."""
    if not early:
        return [(start + backward, b) for b in tensor_bytes]
    if len(fractions) == len(tensor_bytes):
        return [(start + backward * f, b) for f, b in zip(fractions, tensor_bytes, strict=True)]
    total = sum(tensor_bytes) or 1.0
    out, done = [], 0.0
    for size in reversed(tensor_bytes):
        done += size
        out.append((start + backward * done / total, size))
    return out


def fused_buffers(sizes: Sequence[float], fusion_bytes: float) -> list[float]:
    """The sizes fused greedily into buffers of at most `fusion_bytes` (all ready at once)."""
    out, buffer = [], 0.0
    for size in sizes:
        if buffer and buffer + size > fusion_bytes:
            out.append(buffer)
            buffer = 0.0
        buffer += size
    return [*out, buffer] if buffer else out
