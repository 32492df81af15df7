"""The hand-written loops hvdkit is measured against: steps/s after warm-up, and the plain
PyTorch step both baselines (a raw Horovod loop, DDP) run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hvdkit.data import ShardedLoader


def steps_per_second(loader: ShardedLoader, step: Callable[[Any, Any], None], steps: int,
                     warmup: int, sync: Callable[[], None] | None = None) -> float:
    """Run `step(x, y)` over the loader's batches; the rate of the steps after `warmup`.
    `sync` (a barrier) runs when the clock starts and stops, where the peer needs one."""
    sync = sync or (lambda: None)
    done, start = 0, 0.0
    while done < steps:
        for x, y in loader.batches(done):
            step(x, y)
            done += 1
            if done == warmup:
                sync()
                start = time.perf_counter()
            if done == steps:
                break
    sync()
    return (steps - warmup) / (time.perf_counter() - start)


def torch_step(model: Any, optimizer: Any) -> Callable[[Any, Any], None]:
    """One plain PyTorch training step on numpy inputs (cross-entropy, loss read back)."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        optimizer.zero_grad()
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        loss.item()

    return step
