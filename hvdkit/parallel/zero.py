"""ZeRO stage 1 (optimizer-state sharding): the framework-free plan of the flat parameter space.

The model's parameters, in order, form one flat float32 space. It is cut into buckets of whole
parameters (about `bucket_bytes` each; a larger parameter gets a bucket of its own); each
bucket is padded to a multiple of the n data-parallel ranks and split into n equal chunks,
chunk r belonging to rank r. Rank r's *shard* is its chunks of every bucket, end to end: the
one flat tensor its optimizer steps and holds state for.

One step (hvdkit/adapters/<framework>/zero.py does the mechanics):

    bucket gradients --reducescatter (one per bucket, one grouped call)--> this rank's chunks
    optimizer.step on the shard (state: 1/n of the unsharded optimizer's)
    updated chunks --allgather (one per bucket, one grouped call)--> every parameter

Per rank and step a ring sends (n−1)/n of the padded buckets in each collective: gradients on
the wire (2 bytes each with fp16), parameters at 4 bytes — as many bytes as a ring-allreduce
when nothing is compressed. The arithmetic of SGD and Adam is elementwise, so stepping the
shard gives the parameters plain data parallelism gives. Checkpoints gather the shards into
the full per-parameter state (`unshard`), and `shard` cuts it again for any number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hvdkit.errors import UserError

DEFAULT_BUCKET_BYTES = 16 * 2**20
"""Bucket size: a few buckets for large models (each a fused collective), one for small ones."""


@dataclass(frozen=True)
class Piece:
    """Part of one parameter inside this rank's shard."""

    bucket: int
    """Index of its bucket."""
    param: int
    """Index of the parameter."""
    param_offset: int
    """First element inside the flattened parameter."""
    shard_offset: int
    """First element inside this rank's shard."""
    size: int


@dataclass(frozen=True)
class Bucket:
    params: tuple[int, ...]
    """Indices of the parameters it holds, consecutive."""
    start: int
    """Its first element in the flat parameter space."""
    size: int
    """Elements of its parameters (no padding)."""
    padded: int
    """`size` rounded up to a multiple of the ranks."""
    shard_offset: int
    """Where its chunk starts inside every rank's shard."""

    def chunk(self, ranks: int) -> int:
        return self.padded // ranks


class ShardPlan:
    """Buckets, chunks and byte counts of a ZeRO-1 exchange, for parameters of `shapes`."""

    def __init__(self, shapes: Sequence[Sequence[int]], ranks: int, rank: int,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES, itemsize: int = 4) -> None:
        if ranks < 1 or not 0 <= rank < ranks:
            raise ValueError(f"rank {rank} outside 0..{ranks - 1}")
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        if not self.sizes or min(self.sizes) < 1:
            raise UserError("parallel.sync zero1 needs a model with parameters, none empty")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        self.ranks = ranks
        self.rank = rank
        self.itemsize = itemsize
        self.buckets = self._cut(max(1, bucket_bytes // itemsize))
        self.shard_size = sum(b.chunk(ranks) for b in self.buckets)
        self.pieces = self._pieces()

    @property
    def total(self) -> int:
        """Elements of every parameter together."""
        return self.offsets[-1]

    def _cut(self, limit: int) -> list[Bucket]:
        buckets: list[Bucket] = []
        group: list[int] = []
        shard_offset = 0

        def close() -> None:
            nonlocal shard_offset
            start = self.offsets[group[0]]
            size = self.offsets[group[-1] + 1] - start
            padded = -(-size // self.ranks) * self.ranks
            buckets.append(Bucket(tuple(group), start, size, padded, shard_offset))
            shard_offset += padded // self.ranks

        for index, size in enumerate(self.sizes):
            if group and self.offsets[index] - self.offsets[group[0]] + size > limit:
                close()
                group = []
            group.append(index)
        close()
        return buckets

    def _pieces(self) -> list[Piece]:
        """The parameter parts this rank's shard holds, in shard order (padding left out)."""
        pieces = []
        for number, bucket in enumerate(self.buckets):
            chunk = bucket.chunk(self.ranks)
            lo = bucket.start + self.rank * chunk  # flat-space range of this rank's chunk
            hi = min(lo + chunk, bucket.start + bucket.size)
            for index in bucket.params:
                a, b = max(lo, self.offsets[index]), min(hi, self.offsets[index + 1])
                if a < b:
                    pieces.append(Piece(number, index, a - self.offsets[index],
                                        bucket.shard_offset + a - lo, b - a))
        return pieces

    # Checkpoints: the full state of every parameter <-> the shards (numpy, on the host).

    def shard(self, full: np.ndarray) -> np.ndarray:
        """This rank's shard of a flat array over every parameter (zeros in the padding)."""
        full = np.asarray(full).reshape(-1)
        if full.size != self.total:
            raise ValueError(f"expected {self.total} elements, got {full.size}")
        out = np.zeros(self.shard_size, full.dtype)
        for p in self.pieces:
            start = self.offsets[p.param] + p.param_offset
            out[p.shard_offset:p.shard_offset + p.size] = full[start:start + p.size]
        return out

    def unshard(self, shards: np.ndarray) -> np.ndarray:
        """The flat array over every parameter from every rank's shard (`[ranks, shard_size]`,
        as an allgather of the shards returns them, flat or not)."""
        shards = np.asarray(shards).reshape(self.ranks, self.shard_size)
        parts = []
        for bucket in self.buckets:
            chunk = bucket.chunk(self.ranks)
            columns = shards[:, bucket.shard_offset:bucket.shard_offset + chunk]
            parts.append(columns.reshape(-1)[:bucket.size])
        return np.concatenate(parts)

    def split(self, full: np.ndarray) -> list[np.ndarray]:
        """A flat array over every parameter, cut and shaped as the parameters."""
        return [full[a:b].reshape(s) for a, b, s in
                zip(self.offsets[:-1], self.offsets[1:], self.shapes, strict=True)]

    # What a step moves.

    def bytes_per_step(self, wire_itemsize: int = 4) -> int:
        """Bytes this rank sends per step in a ring: (n−1)/n of every padded bucket as
        gradients (`wire_itemsize` bytes each) and again as parameters (`itemsize`)."""
        moved = sum(b.padded for b in self.buckets) * (self.ranks - 1) // self.ranks
        return moved * (wire_itemsize + self.itemsize)

    def describe(self) -> dict[str, int]:
        return {"parameters": self.total, "buckets": len(self.buckets),
                "shard_elements": self.shard_size, "ranks": self.ranks}
