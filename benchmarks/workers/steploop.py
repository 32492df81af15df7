"""The hand-written loops hvdkit is measured against (a raw Horovod loop, PyTorch DDP): the data
set resident in memory, batches sliced out of it inside the step, and the clock.

They are the limit, not loops that share hvdkit's code: each rank holds its shard of the data set
as one array (shuffled once, before the clock), so no input path runs between steps. They use
hvdkit's model registry (the same model) and the recipe's data set builder (the same arrays),
nothing else of hvdkit: no loader, no adapter, no optimizer factory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hvdkit.data import build_dataset


def resident_shard(recipe: Any, rank: int, size: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """This rank's shard of the training arrays as the model takes them (float32 inputs, or
    int64 token ids; int64 targets), shuffled once; and the data set (its shapes, classes)."""
    data = build_dataset(recipe.data, recipe.train.seed, recipe.folder)
    x, y = np.asarray(data.x_train)[rank::size], np.asarray(data.y_train)[rank::size]
    order = np.random.default_rng(recipe.train.seed + rank).permutation(len(y))
    tokens = data.task == "language_model"
    x = x[order].astype(np.int64) if tokens else x[order].astype(np.float32)
    if not tokens and np.asarray(data.x_train).dtype == np.uint8:
        x /= 255.0
    return np.ascontiguousarray(x), np.ascontiguousarray(y[order].astype(np.int64)), data


def classes(data: Any) -> int:
    """The model's outputs: the data set's classes (or vocabulary)."""
    return data.num_classes or int(np.asarray(data.y_train).max()) + 1


def steps_per_second(step: Callable[[int], Any], batches: int, steps: int, warmup: int,
                     sync: Callable[[], None] | None = None) -> float:
    """Steps/s of `step(batch_index)` after `warmup` steps, cycling over `batches`. `sync` (a
    barrier) runs when the clock starts and stops, where the peer needs one."""
    sync = sync or (lambda: None)
    start, last = 0.0, None
    for i in range(steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        last = step(i % batches)
    np.asarray(last)  # the last step's loss, read back: every step has run
    sync()
    return (steps - warmup) / (time.perf_counter() - start)


def torch_step(model: Any, optimizer: Any, x: Any, y: Any, batch: int,
               precision: str = "fp32") -> Callable[[int], Any]:
    """One plain PyTorch training step on batch i of the resident tensors x, y (cross-entropy
    over classes, or over every position's next token); forward and loss under bf16 autocast
    with precision bf16."""
    import contextlib

    import torch
    import torch.nn.functional as F

    model.train()

    def autocast() -> Any:
        if precision == "bf16":
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(i: int) -> Any:
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        optimizer.zero_grad()
        with autocast():
            out = model(xb)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step
