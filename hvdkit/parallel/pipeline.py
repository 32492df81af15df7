"""Pipeline parallelism, framework-free: the stage plan, the rank layout and the schedules.

A model is a sequence of *layers*: each layer with parameters, together with the parameter-free
layers that follow it (activations, pooling, flatten), so a PyTorch `Linear, ReLU` and a Keras
`Dense(activation="relu")` count the same and one recipe cuts both frameworks alike.

    plan = plan_stages([4096, 4160, 650], stages=2)         # balanced by cost → Plan([0, 2, 3])
    schedule("1f1b", stage=0, stages=2, microbatches=4)     # [F0, F1, B0, F2, B1, F3, B2, B3]

Ranks are laid out pipeline by pipeline (hvdkit.layout): rank = replica × stages + stage, so the
stages of one replica are neighbours and the ranks of one stage form a Horovod process set.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from hvdkit.errors import UserError

SCHEDULES = ("gpipe", "1f1b")


class Op(NamedTuple):
    """One step of a stage's schedule: forward (`F`) or backward (`B`) of a micro-batch."""

    kind: str
    microbatch: int

    def __repr__(self) -> str:
        return f"{self.kind}{self.microbatch}"


# -- the stage plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Stage i holds layers `bounds[i]:bounds[i+1]`."""

    bounds: tuple[int, ...]

    @property
    def stages(self) -> int:
        return len(self.bounds) - 1

    def layers(self, stage: int) -> range:
        return range(self.bounds[stage], self.bounds[stage + 1])


def balanced_bounds(costs: list[float], parts: int) -> list[int]:
    """Cut `costs` into `parts` contiguous non-empty runs minimising the largest run's sum."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: the smallest largest-sum cutting the first i layers into k runs.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    bounds, i = [n], n
    for k in range(parts, 0, -1):
        i = cut[k][i]
        bounds.append(i)
    return bounds[::-1]


def plan_stages(costs: list[float], stages: int, boundaries: list[int] | None = None) -> Plan:
    """The stage plan: explicit `boundaries` (first layer of stages 1..n−1) or a balanced cut."""
    n = len(costs)
    if stages > n:
        raise UserError(f"parallel.stages is {stages} but the model has only {n} layers "
                        "(layers with parameters); use at most that many stages")
    if boundaries:
        if len(boundaries) != stages - 1:
            raise UserError(f"parallel.boundaries needs {stages - 1} entries (one per stage "
                            f"after the first), got {len(boundaries)}")
        bounds = [0, *boundaries, n]
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise UserError(f"parallel.boundaries {boundaries} must rise strictly within "
                            f"1..{n - 1} (the model has {n} layers)")
        return Plan(tuple(bounds))
    return Plan(tuple(balanced_bounds(costs, stages)))


# -- the schedules --------------------------------------------------------------------------


def gpipe(stage: int, stages: int, microbatches: int) -> list[Op]:
    """All forwards, then all backwards: every stage holds all m micro-batches at the peak."""
    m = range(microbatches)
    return [Op("F", i) for i in m] + [Op("B", i) for i in m]


def one_f_one_b(stage: int, stages: int, microbatches: int) -> list[Op]:
    """Warm-up forwards, then one forward one backward, then the remaining backwards.

    Stage s runs `stages − s − 1` warm-up forwards, so it never holds more than
    `stages − s` micro-batches (PipeDream-flush / Megatron's non-interleaved 1F1B)."""
    warmup = min(stages - stage - 1, microbatches)
    ops = [Op("F", i) for i in range(warmup)]
    for i in range(microbatches - warmup):
        ops += [Op("F", warmup + i), Op("B", i)]
    return ops + [Op("B", i) for i in range(microbatches - warmup, microbatches)]


def schedule(name: str, stage: int, stages: int, microbatches: int) -> list[Op]:
    if name == "gpipe":
        return gpipe(stage, stages, microbatches)
    if name == "1f1b":
        return one_f_one_b(stage, stages, microbatches)
    raise UserError(f"parallel.schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")


def peak_in_flight(ops: list[Op]) -> int:
    """The most micro-batches whose activations a stage holds (forward done, backward not)."""
    held = peak = 0
    for op in ops:
        held += 1 if op.kind == "F" else -1
        peak = max(peak, held)
    return peak


def ideal_bubble(stages: int, microbatches: int) -> float:
    """The idle share of each stage with equal stage times and free communication."""
    return (stages - 1) / (microbatches + stages - 1)


def simulate(name: str, stages: int, microbatches: int, forward: float = 1.0,
             backward: float = 2.0) -> tuple[float, list[float]]:
    """Run the schedules on a clock with the pipeline's dependencies; returns the makespan
    and each stage's idle share. Raises RuntimeError if the schedules deadlock."""
    plans = [schedule(name, s, stages, microbatches) for s in range(stages)]
    done: dict[tuple[int, Op], float] = {}
    nexts, clocks = [0] * stages, [0.0] * stages
    while any(n < len(p) for n, p in zip(nexts, plans, strict=True)):
        progressed = False
        for s in range(stages):
            if nexts[s] == len(plans[s]):
                continue
            op = plans[s][nexts[s]]
            dep = ((s - 1, op) if op.kind == "F" and s > 0
                   else (s + 1, op) if op.kind == "B" and s < stages - 1 else None)
            if dep is not None and dep not in done:
                continue
            start = max(clocks[s], done.get(dep, 0.0)) if dep else clocks[s]
            clocks[s] = done[(s, op)] = start + (forward if op.kind == "F" else backward)
            nexts[s] += 1
            progressed = True
        if not progressed:
            raise RuntimeError(f"{name} schedule deadlocks with {stages} stages")
    span = max(clocks)
    busy = microbatches * (forward + backward)
    return span, [1 - busy / span for _ in range(stages)]


def group_layers(has_params: list[bool]) -> list[list[int]]:
    """Indices of the model's layers, grouped: each layer with parameters with the
    parameter-free layers after it (those before the first join the first group)."""
    groups: list[list[int]] = []
    for i, weighted in enumerate(has_params):
        if weighted or not groups:
            if groups and not any(has_params[j] for j in groups[-1]):
                groups[-1].append(i)  # leading parameter-free layers join the first group
                continue
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def median_seconds(work: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Median wall seconds of `work(*args)` over `repeats` runs, after one untimed run."""
    work(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work(*args)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]
