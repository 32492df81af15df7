"""Pipeline parallelism, framework-free: the stage plan (which layers each stage keeps).

A model is a sequence of *layers*: each layer with parameters, together with the parameter-free
layers that follow it (activations, pooling, flatten), so a PyTorch `Linear, ReLU` and a Keras
`Dense(activation="relu")` count the same and one recipe cuts both frameworks alike.

    plan = plan_stages([4096, 4160, 650], stages=2)         # balanced by cost → Plan([0, 2, 3])

The schedules (which ops each stage runs, in which order) live in hvdkit.parallel.schedules.

Ranks are laid out pipeline by pipeline (hvdkit.layout): rank = replica × stages + stage, so the
stages of one replica are neighbours and the ranks of one stage form a Horovod process set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    """The stage plan: explicit `boundaries` (first layer of stages 1..n−1) or a balanced cut.
    The layout has checked that they fit (ParallelLayout.check_cut)."""
    if stages > len(costs) or (boundaries and len(boundaries) != stages - 1):
        raise ValueError(f"{stages} stages, boundaries {boundaries}: not a cut of "
                         f"{len(costs)} layers")
    if boundaries:
        return Plan((0, *boundaries, len(costs)))
    return Plan(tuple(balanced_bounds(costs, stages)))


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


MIN_ROUNDS = 5
MIN_SECONDS = 0.5
MAX_ROUNDS = 100


def layer_seconds(works: Sequence[Callable[[], Any]], min_rounds: int = MIN_ROUNDS,
                  min_seconds: float = MIN_SECONDS, max_rounds: int = MAX_ROUNDS) -> list[float]:
    """Each of `works`' wall seconds: the fastest of its timed runs, after two untimed ones.

    The runs are interleaved, one of each work per round, for at least `min_rounds` rounds and
    `min_seconds` in all (at most `max_rounds`). Another process taking the core for tens of
    milliseconds then slows some run of every work rather than every run of one: measured one
    work at a time (median of 5), a loaded 2-core host made the first of four equal-cost
    layers look twice its cost, and `split: time` cut at the wrong layer.
    """
    for work in works:  # the first call pays one-off set-up (allocations, kernels)
        work()
        work()
    best = [float("inf")] * len(works)
    started = time.perf_counter()
    for done in range(1, max_rounds + 1):
        for i, work in enumerate(works):
            t0 = time.perf_counter()
            work()
            best[i] = min(best[i], time.perf_counter() - t0)
        if done >= min_rounds and time.perf_counter() - started >= min_seconds:
            break
    return best
