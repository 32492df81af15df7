"""PowerSGD for PyTorch: low-rank gradients through Horovod allreduce, with error feedback
(the plan and the algorithm: hvdkit.parallel.powersgd).

    exchange = PowerSGDExchange(model.parameters(), optimizer, hvd, rank=2, warmup_steps=10)
    loss.backward(); exchange.step(lr)      # instead of optimizer.step()

Two grouped allreduces per step: the P's with every uncompressed gradient, then the Q's.
The Q's (equal on every rank) and the errors (each rank's own) are state: `state_dict`
gathers them for a checkpoint; a run resumed at another number of ranks restarts the errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from hvdkit.parallel.powersgd import (
    DEFAULT_MIN_COMPRESSION,
    DEFAULT_RANK,
    DEFAULT_WARMUP_STEPS,
    PowerSGDPlan,
)


class PowerSGDExchange:
    """Compressed gradient averaging over `process_set`, then the optimizer's step."""

    def __init__(self, params: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 hvd: Any, process_set: Any = None, reduction: str = "average",
                 rank: int = DEFAULT_RANK, warmup_steps: int = DEFAULT_WARMUP_STEPS,
                 min_compression: float = DEFAULT_MIN_COMPRESSION,
                 keep_whole: Sequence[int] = ()) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = optimizer
        self.hvd = hvd
        self.process_set = process_set or hvd.global_process_set
        self.op = {"average": hvd.Average, "sum": hvd.Sum}[reduction]
        self.plan = PowerSGDPlan([p.shape for p in self.params], rank, warmup_steps,
                                 self.process_set.size(), min_compression,
                                 keep_whole=keep_whole)
        device = self.params[0].device
        self.qs = [torch.from_numpy(self.plan.initial_q(m)).to(device) for m in self.plan.matrices]
        self.errors = [torch.zeros(m.rows, m.cols, device=device) for m in self.plan.matrices]
        self.steps = 0
        self.seconds = 0.0  # waiting for the allreduces

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def _grad(self, index: int) -> torch.Tensor:
        p = self.params[index]
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad

    def _allreduce(self, tensors: list[torch.Tensor], name: str) -> list[torch.Tensor]:
        if not tensors:
            return []
        started = time.perf_counter()
        out = self.hvd.grouped_allreduce(tensors, name=f"powersgd.{name}", op=self.op,
                                         process_set=self.process_set)
        self.seconds += time.perf_counter() - started
        return out

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Reduce the gradients (compressed past the warm-up), then step the optimizer."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        if self.plan.compressing(self.steps):
            self._compressed()
        else:
            grads = [self._grad(i) for i in range(len(self.params))]
            for g, r in zip(grads, self._allreduce(grads, "whole"), strict=True):
                g.copy_(r)
        self.optimizer.step()
        self.steps += 1

    def _compressed(self) -> None:
        matrices = self.plan.matrices
        ms = [self._grad(m.index).reshape(m.rows, m.cols) + e
              for m, e in zip(matrices, self.errors, strict=True)]
        plain = [self._grad(i) for i in self.plan.uncompressed]
        reduced = self._allreduce([m @ q for m, q in zip(ms, self.qs, strict=True)] + plain, "p")
        ps = [torch.linalg.qr(p, mode="reduced").Q for p in reduced[:len(ms)]]
        for g, r in zip(plain, reduced[len(ms):], strict=True):
            g.copy_(r)
        self.qs = self._allreduce([m.T @ p for m, p in zip(ms, ps, strict=True)], "q")
        for i, (matrix, m, p, q) in enumerate(zip(matrices, ms, ps, self.qs, strict=True)):
            approx = p @ q.T
            self.errors[i] = m - approx
            self._grad(matrix.index).copy_(approx.reshape(self.params[matrix.index].shape))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def bytes_per_step(self) -> float:
        """Bytes this rank sends per step now (uncompressed during the warm-up)."""
        return self.plan.bytes_per_step(self.plan.compressing(self.steps))

    def state_dict(self) -> dict[str, Any]:
        """Step count, Q's, and every rank's errors (a collective: gathered over the process
        set, `[ranks, rows, cols]` each). The optimizer's state is the adapter's."""
        errors = [self.hvd.allgather(e[None], process_set=self.process_set).cpu()
                  for e in self.errors]
        return {"steps": self.steps,
                "qs": [q.cpu() for q in self.qs], "errors": errors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore. Each rank takes its own errors back; at another number of ranks they
        restart at zero (the Q's, equal on every rank, are kept)."""
        self.steps = int(state["steps"])
        device = self.params[0].device
        self.qs = [torch.as_tensor(q).to(device) for q in state["qs"]]
        errors = [torch.as_tensor(e) for e in state["errors"]]
        if errors and errors[0].shape[0] == self.plan.ranks:
            rank = self.process_set.rank()
            self.errors = [e[rank].to(device).clone() for e in errors]
        else:
            self.errors = [torch.zeros_like(e) for e in self.errors]
