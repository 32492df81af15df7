"""Bandwidth arithmetic, with the nccl-tests definitions, and the bytes a gradient exchange moves.

    algbw = bytes / time;  busbw = algbw × 2(n−1)/n  (allreduce)

busbw is comparable across rank counts: it is the rate each rank's link carries in a ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bus_factor(n: int) -> float:
    """The allreduce bus factor 2(n−1)/n (0 for one rank: nothing moves)."""
    return 2.0 * (n - 1) / n


def algbw(nbytes: float, seconds: float) -> float:
    """Algorithm bandwidth in bytes/s."""
    return nbytes / seconds


def busbw(nbytes: float, seconds: float, n: int) -> float:
    """Bus bandwidth in bytes/s."""
    return algbw(nbytes, seconds) * bus_factor(n)


def ring_bytes_per_rank(nbytes: float, n: int) -> float:
    """Bytes each rank sends in one ring-allreduce of `nbytes` (reduce-scatter + allgather)."""
    return nbytes * bus_factor(n)


def ps_bytes_at_root(grad_bytes: float, param_bytes: float, n: int) -> float:
    """Bytes through the parameter server's link per step: n−1 gradients in, n−1 parameter
    copies out (the gradients may be compressed; the parameters are not)."""
    return (grad_bytes + param_bytes) * (n - 1)


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p90 of a list of latencies."""
    values = np.asarray(seconds, dtype=np.float64)
    return {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90))}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.4g} {unit}"
        n /= 1024
    return f"{n} GB"
