"""PowerSGD gradient compression (Vogels et al., 2019): the framework-free plan.

Which tensors go low-rank, their matrix shapes and ranks, the warm-start Q of each, and the
bytes a step moves. The arithmetic itself runs in the framework
(hvdkit/adapters/<framework>/powersgd.py), once per step after the backward passes:

    M = grad + error                      (error feedback, kept per tensor and per rank)
    P = M Q;   allreduce(P);  P = orthonormal columns of P
    Q = Mᵀ P;  allreduce(Q)               (Q is kept: the next step starts from it)
    grad = P Qᵀ;   error = M − grad

A weight of rank ≥ 2 is seen as a matrix (its first dimension × the rest) and compressed when
that saves at least `min_compression` times its size; vectors (biases, norms) and small
matrices are allreduced whole, in the same grouped call as the P's. The first `warmup_steps`
steps allreduce every gradient whole (no error yet), as PyTorch's PowerSGD hook does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hvdkit.parallel.exchange import GradientExchange
from hvdkit.parallel.traffic import ring_bytes_per_rank

DEFAULT_RANK = 2
DEFAULT_WARMUP_STEPS = 10
DEFAULT_MIN_COMPRESSION = 2.0
Q_SEED = 20190601
"""The same on every rank, so that every rank starts from the same Q's."""


@dataclass(frozen=True)
class Matrix:
    """How one compressed tensor is exchanged."""

    index: int
    """Index of the tensor among the parameters."""
    rows: int
    cols: int
    rank: int
    """min(requested rank, rows, cols)."""

    @property
    def low_rank_size(self) -> int:
        """Elements of P and Q together."""
        return (self.rows + self.cols) * self.rank


class PowerSGDPlan:
    """The compression plan for parameters of `shapes`, on `ranks` data-parallel ranks."""

    def __init__(self, shapes: Sequence[Sequence[int]], rank: int = DEFAULT_RANK,
                 warmup_steps: int = DEFAULT_WARMUP_STEPS, ranks: int = 1,
                 min_compression: float = DEFAULT_MIN_COMPRESSION, itemsize: int = 4) -> None:
        if rank < 1:
            raise ValueError(f"PowerSGD rank must be at least 1, got {rank}")
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.rank = rank
        self.warmup_steps = warmup_steps
        self.ranks = ranks
        self.itemsize = itemsize
        self.matrices: list[Matrix] = []
        self.uncompressed: list[int] = []
        for index, shape in enumerate(self.shapes):
            matrix = None
            if len(shape) >= 2:
                rows, cols = shape[0], self.sizes[index] // shape[0]
                r = min(rank, rows, cols)
                if rows * cols >= min_compression * (rows + cols) * r:
                    matrix = Matrix(index, rows, cols, r)
            if matrix is None:
                self.uncompressed.append(index)
            else:
                self.matrices.append(matrix)

    def initial_q(self, matrix: Matrix) -> np.ndarray:
        """The first Q of a tensor (cols × rank, standard normal), equal on every rank."""
        rng = np.random.default_rng([Q_SEED, matrix.index])
        return rng.standard_normal((matrix.cols, matrix.rank)).astype(np.float32)

    def compressing(self, step: int) -> bool:
        """Whether optimizer step `step` (0-based) is compressed, i.e. past the warm-up."""
        return step >= self.warmup_steps

    def elements_per_step(self, compressed: bool = True) -> int:
        """Elements each rank allreduces per step (P's, Q's and the uncompressed tensors)."""
        if not compressed:
            return sum(self.sizes)
        return (sum(m.low_rank_size for m in self.matrices)
                + sum(self.sizes[i] for i in self.uncompressed))

    def bytes_per_step(self, compressed: bool = True) -> float:
        """Bytes each rank sends per step in ring-allreduces (2(n−1)/n of what it reduces)."""
        return ring_bytes_per_rank(self.elements_per_step(compressed) * self.itemsize,
                                   self.ranks)

    def compression_ratio(self) -> float:
        """Uncompressed ÷ compressed bytes per step."""
        return self.elements_per_step(False) / self.elements_per_step(True)

    def describe(self) -> dict[str, float]:
        return {"rank": self.rank, "compressed_tensors": len(self.matrices),
                "uncompressed_tensors": len(self.uncompressed),
                "warmup_steps": self.warmup_steps,
                "compression_ratio": self.compression_ratio()}


class PowerSGD(GradientExchange):
    """PowerSGD in the exchange slot (hvdkit.parallel.exchange), over this rank's replicas.
    The adapter's `powersgd_reducer` hook installs the framework's mechanics; a step is then
    the adapter's `optimizer_step`, compiled into TensorFlow's step."""

    name = "allreduce"
    collective_state = True  # every rank's errors go into a checkpoint

    def __init__(self, op: str, ranks: list[int] | None, rank: int, warmup_steps: int) -> None:
        super().__init__()
        self.op, self.ranks, self.rank, self.warmup_steps = op, ranks, rank, warmup_steps
        self.plan: PowerSGDPlan | None = None

    def attach(self, adapter: Any) -> None:
        super().attach(adapter)
        self.plan = adapter.powersgd_reducer(self.op, self.ranks, self.rank, self.warmup_steps)
        self.bytes_per_step = float(self.plan.elements_per_step(True) * self.plan.itemsize)

    def report(self) -> dict[str, Any]:
        assert self.plan is not None
        return {**super().report(), "compression": "powersgd",
                "bytes_sent_per_step": self.plan.bytes_per_step(True),
                "bytes_sent_per_step_uncompressed": self.plan.bytes_per_step(False),
                **self.plan.describe()}
