"""Weights that layers on different pipeline stages share (a GPT's tied embedding and head).

Every rank builds the whole model and keeps its stage's layers, so a weight used by layers on
two stages exists once on each of them. Each copy gets only its own stage's part of the
gradient; summing the parts across those stages (within one pipeline, before the stage's
replicas average) gives every copy the gradient the unsplit model's single weight gets, so the
copies start equal and stay equal, step after step (Megatron-LM does the same for its tied
word embeddings).

    shared = shared_weights([[id(w) for w in weights(layer)] for layer in layers], stage_of)
    tied = TiedGradients(pipe_comm, my_stage, shared, [id(w) for w in my_weights])
    for i in tied.indices:        # the adapter, after the replicas' exchange, before the update
        tied.reduce_one(i, grad_i)            # my_weights[i]'s numpy gradient, summed in place

Summing across stages and averaging across replicas are both linear, so their order does not
matter; the adapters sum after the exchange (whose allreduces may still be writing the
gradients until then).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def shared_weights(layer_keys: list[list[int]], stage_of_layer: list[int]
                   ) -> dict[int, tuple[int, ...]]:
    """Weight key → the stages whose layers use it, for the keys more than one stage uses, in
    the order the model's layers first use them."""
    stages: dict[int, set[int]] = {}
    for keys, stage in zip(layer_keys, stage_of_layer, strict=True):
        for key in keys:
            stages.setdefault(key, set()).add(stage)
    return {key: tuple(sorted(s)) for key, s in stages.items() if len(s) > 1}


class TiedGradients:
    """Sums the gradients of shared weights across the stages of one pipeline holding them.

    `comm` is the pipeline's communicator (rank = stage); every stage of it must construct
    this with the same `shared` map (it splits one communicator per set of sharing stages).
    """

    def __init__(self, comm: Any, stage: int, shared: dict[int, tuple[int, ...]],
                 my_keys: list[int]) -> None:
        from mpi4py import MPI

        self.groups: list[tuple[Any, list[int]]] = []
        for stages in sorted(set(shared.values())):
            member = stage in stages
            sub = comm.Split(0 if member else MPI.UNDEFINED, stage)
            if member:
                # In the model's order of the shared weights, the same on every stage.
                mine = [my_keys.index(key) for key, held in shared.items() if held == stages]
                self.groups.append((sub, mine))

    def holders(self) -> dict[int, int]:
        """Position of each shared weight → how many stages hold a copy of it."""
        return {i: sub.Get_size() for sub, mine in self.groups for i in mine}

    @property
    def indices(self) -> list[int]:
        """Positions (in this stage's weights) of the weights shared with other stages."""
        return [i for _, mine in self.groups for i in mine]

    def reduce_one(self, index: int, grad: np.ndarray) -> None:
        """Sum weight `index`'s gradient across the stages sharing it, in place."""
        from mpi4py import MPI

        for comm, mine in self.groups:
            if index in mine:
                comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)  # grad: a contiguous float array
