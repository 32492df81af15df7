"""ZeRO-1 for PyTorch: Horovod reduce-scatter of the gradients, the optimizer on this rank's
shard only, all-gather of the updated parameters (the plan: hvdkit.parallel.zero).

    exchange = ZeroExchange(model.parameters(), torch.optim.Adam(...), hvd)
    loss.backward(); exchange.step(lr)      # instead of optimizer.step()

The optimizer given is a template: its class and hyperparameters make a new optimizer over
one flat shard tensor, which alone holds state. `state_dict()` gathers that state into the
unsharded optimizer's own format (one entry per parameter), so checkpoints resume at any
number of ranks, and `load_state_dict` cuts it again.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from hvdkit.parallel.zero import DEFAULT_BUCKET_BYTES, ShardPlan


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer holds as state."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, torch.Tensor))


class ZeroExchange:
    """Reduce-scatter, sharded step, all-gather over `process_set` (Horovod's global set by
    default; a pipeline stage's set in a hybrid layout)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 hvd: Any, process_set: Any = None, reduction: str = "average",
                 compression: str = "none", bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.params = [p for p in params if p.requires_grad]
        if len(optimizer.param_groups) != 1:
            raise ValueError("ZeRO-1 takes an optimizer with one parameter group")
        self.hvd = hvd
        self.process_set = process_set or hvd.global_process_set
        self.plan = ShardPlan([p.shape for p in self.params], self.process_set.size(),
                              self.process_set.rank(), bucket_bytes)
        self.op = {"average": hvd.Average, "sum": hvd.Sum}[reduction]
        self.fp16 = compression == "fp16"
        self.wire = hvd.Compression.fp16 if self.fp16 else hvd.Compression.none
        device = self.params[0].device
        self.shard = torch.nn.Parameter(torch.zeros(self.plan.shard_size, device=device))
        self.optimizer = _rebuild(optimizer, self.shard)
        self.seconds = 0.0  # waiting for the collectives
        self.guard: Any = None
        """Checks the reduced shard before the update (hvdkit/adapters/torch/precision.py):
        `guard([grad]) -> finite`; a step it finds non-finite is skipped on every rank."""
        self._pull()

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        """The shard optimizer's state (this rank's share only)."""
        return self.optimizer.state

    @torch.no_grad()
    def _pull(self) -> None:
        """Copy this rank's part of the parameters into the shard (after a load or broadcast
        the model is the truth)."""
        for piece in self.plan.pieces:
            flat = self.params[piece.param].detach().reshape(-1)
            self.shard[piece.shard_offset:piece.shard_offset + piece.size].copy_(  # any device
                flat[piece.param_offset:piece.param_offset + piece.size])

    def _bucket_grads(self) -> list[torch.Tensor]:
        flats = []
        for bucket in self.plan.buckets:
            parts = [self.params[i].grad.reshape(-1).to(self.shard.device)
                     if self.params[i].grad is not None
                     else self.shard.new_zeros(self.params[i].numel())
                     for i in bucket.params]
            if bucket.padded > bucket.size:
                parts.append(parts[0].new_zeros(bucket.padded - bucket.size))
            flats.append(torch.cat(parts))
        return flats

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Reduce the gradients, step this rank's shard, gather every parameter."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self._pull()
        started = time.perf_counter()
        chunks = self.hvd.grouped_reducescatter(self._bucket_grads(), name="zero1.grads",
                                                compression=self.wire, op=self.op,
                                                process_set=self.process_set)
        self.seconds += time.perf_counter() - started
        self.shard.grad = torch.cat([c.to(self.shard.dtype) for c in chunks])
        if self.guard is not None and not self.guard([self.shard.grad]):
            return  # every rank skips: the parameters stay as they are
        self.optimizer.step()
        n = self.plan.ranks
        mine = [self.shard.detach()[b.shard_offset:b.shard_offset + b.chunk(n)]
                for b in self.plan.buckets]
        started = time.perf_counter()
        buckets = self.hvd.grouped_allgather(mine, name="zero1.params",
                                             process_set=self.process_set)
        self.seconds += time.perf_counter() - started
        for bucket, flat in zip(self.plan.buckets, buckets, strict=True):
            for i in bucket.params:
                start = self.plan.offsets[i] - bucket.start
                self.params[i].copy_(flat[start:start + self.params[i].numel()]
                                     .view_as(self.params[i]))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_bytes(self) -> int:
        """Optimizer-state bytes this rank holds."""
        return optimizer_state_bytes(self.optimizer)

    def bytes_per_step(self) -> int:
        return self.plan.bytes_per_step(2 if self.fp16 else 4)

    # Checkpoints: collectives, every rank of the process set calls them.

    def _gather(self, value: torch.Tensor) -> np.ndarray:
        gathered = self.hvd.allgather(value.detach().reshape(1, -1), process_set=self.process_set)
        return self.plan.unshard(gathered.cpu().numpy())

    def state_dict(self) -> dict[str, Any]:
        """The whole optimizer state, as the unsharded optimizer's `state_dict()` has it."""
        shard_state = self.optimizer.state.get(self.shard, {})
        per_param: list[dict[str, Any]] = [{} for _ in self.params]
        for key in sorted(shard_state):
            value = shard_state[key]
            if isinstance(value, torch.Tensor) and value.shape == self.shard.shape:
                for entry, part in zip(per_param, self.plan.split(self._gather(value)),
                                       strict=True):
                    entry[key] = torch.from_numpy(part.copy())
            else:
                for entry in per_param:
                    entry[key] = value.clone() if isinstance(value, torch.Tensor) else value
        group = {k: v for k, v in self.optimizer.param_groups[0].items() if k != "params"}
        return {"state": {i: s for i, s in enumerate(per_param) if s},
                "param_groups": [{**group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this rank's shard of a whole optimizer state (from `state_dict`, or from an
        unsharded optimizer over the same parameters), at any number of ranks."""
        entries = [state["state"].get(i, state["state"].get(str(i), {}))
                   for i in range(len(self.params))]
        shard_state: dict[str, Any] = {}
        for key, first in (entries[0] if entries else {}).items():
            if isinstance(first, torch.Tensor) and first.dim() > 0:  # a slot, not a step count
                full = np.concatenate([torch.as_tensor(e[key]).reshape(-1).cpu().numpy()
                                       for e in entries])
                shard_state[key] = torch.from_numpy(self.plan.shard(full))
            else:
                shard_state[key] = first
        group = {k: v for k, v in state["param_groups"][0].items() if k != "params"}
        self.optimizer.load_state_dict({"state": {0: shard_state} if shard_state else {},
                                        "param_groups": [{**group, "params": [0]}]})
        self._pull()


def _rebuild(template: torch.optim.Optimizer, shard: torch.Tensor) -> torch.optim.Optimizer:
    """The template's class and hyperparameters over `shard`: its defaults, less those its
    constructor does not take (AdamW's defaults hold `decoupled_weight_decay`, fixed True)."""
    accepted = inspect.signature(type(template)).parameters
    return type(template)([shard], **{k: v for k, v in template.defaults.items()
                                      if k in accepted})
