"""PowerSGD gradient compression (Vogels et al., 2019): the framework-free plan.

Which tensors go low-rank, their matrix shapes and ranks, the warm-start Q of each, and the
bytes a step moves. The arithmetic itself runs in the framework
(hvdkit/adapters/<framework>/powersgd.py), once per step after the backward passes:

    M = grad + error                      (error feedback, kept per tensor and per rank)
    P = M Q;   allreduce(P);  P = orthonormal columns of P
    Q = Mᵀ P;  allreduce(Q)               (Q is kept: the next step starts from it)
    grad = P Qᵀ;   error = M − grad

A weight of rank ≥ 2 is seen as a matrix, output channels × the rest (PyTorch stores the output
dimension first, Keras last: `out_dim` says which, so one recipe compresses the same matrices on
both frameworks), and compressed when
that saves at least `min_compression` times its size; vectors (biases, norms) and small
matrices are allreduced whole, in the same grouped call as the P's. The first `warmup_steps`
steps allreduce every gradient whole (no error yet), as PyTorch's PowerSGD hook does.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

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
                 min_compression: float = DEFAULT_MIN_COMPRESSION, itemsize: int = 4,
                 out_dim: str = "first", keep_whole: Collection[int] = ()) -> None:
        """`keep_whole`: indices allreduced whole, never compressed (weights tied across
        pipeline stages: each stage's replicas must give their copy the same gradient)."""
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
        self.out_dim = out_dim
        for index, shape in enumerate(self.shapes):
            matrix = None
            if len(shape) >= 2 and index not in keep_whole:
                out = shape[0] if out_dim == "first" else shape[-1]
                rows, cols = out, self.sizes[index] // out
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

    def handed_bytes(self) -> float:
        """Bytes this rank hands to the allreduces per compressed step (P's, Q's, the rest)."""
        return float(self.elements_per_step(True) * self.itemsize)

    def report(self) -> dict[str, float | str]:
        """What a run's summary says of the compression."""
        return {"compression": "powersgd", "bytes_sent_per_step": self.bytes_per_step(True),
                "bytes_sent_per_step_uncompressed": self.bytes_per_step(False),
                **self.describe()}

    def compressed_fraction(self) -> float:
        """The share of the gradient bytes that go through low-rank factors."""
        return sum(self.sizes[m.index] for m in self.matrices) / max(sum(self.sizes), 1)

    def describe(self) -> dict[str, float]:
        return {"rank": self.rank, "compressed_tensors": len(self.matrices),
                "uncompressed_tensors": len(self.uncompressed),
                "warmup_steps": self.warmup_steps,
                "compression_ratio": self.compression_ratio(),
                "compressed_fraction": self.compressed_fraction()}


def warn_little_compressed(plan: PowerSGDPlan, rank: int) -> None:
    """One warning when PowerSGD compresses less than half of the gradient bytes."""
    share = plan.compressed_fraction()
    if share < 0.5 and rank == 0:
        print(f"hvdkit: warning: PowerSGD compresses only {share:.0%} of the gradient bytes "
              f"({len(plan.matrices)} of {len(plan.shapes)} tensors); the rest is allreduced "
              "whole", file=sys.stderr, flush=True)
