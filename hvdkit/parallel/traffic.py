"""The bytes each gradient exchange moves per step, as the strategies and the studies count them.

    ring allreduce   each rank sends S × 2(n−1)/n   (reduce-scatter + all-gather)
    parameter server the server's link carries (grads + params) × (n−1)
"""

from __future__ import annotations


def bus_factor(n: int) -> float:
    """The allreduce bus factor 2(n−1)/n (0 for one rank: nothing moves)."""
    return 2.0 * (n - 1) / n


def ring_bytes_per_rank(nbytes: float, n: int) -> float:
    """Bytes each rank sends in one ring-allreduce of `nbytes` (reduce-scatter + allgather)."""
    return nbytes * bus_factor(n)


def ps_bytes_at_root(grad_bytes: float, param_bytes: float, n: int) -> float:
    """Bytes through the parameter server's link per step: n−1 gradients in, n−1 parameter
    copies out (the gradients may be compressed; the parameters are not)."""
    return (grad_bytes + param_bytes) * (n - 1)
