"""Bandwidth arithmetic, with the nccl-tests definitions (the bytes each exchange moves:
hvdkit.parallel.traffic).

    algbw = bytes / time;  busbw = algbw × 2(n−1)/n  (allreduce)

busbw is comparable across rank counts: it is the rate each rank's link carries in a ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hvdkit.parallel.traffic import bus_factor


def algbw(nbytes: float, seconds: float) -> float:
    """Algorithm bandwidth in bytes/s."""
    return nbytes / seconds


def busbw(nbytes: float, seconds: float, n: int) -> float:
    """Bus bandwidth in bytes/s."""
    return algbw(nbytes, seconds) * bus_factor(n)


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
