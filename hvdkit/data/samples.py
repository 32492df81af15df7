"""What the loader reads from: a split of samples taken a batch of indices at a time.

Every source is a `Samples` (`len()` and `take(idx) -> (x, y)` numpy, converted for the
model), and a `DataSource` pairs a training and a test split with what the model needs to know:
the task, the input shape and dtype, and the number of classes (the vocabulary for language
modelling). Three kinds cover the built-in sources and the user's own data:

  ArraySamples   x and y arrays: in memory, or on disk (`DiskArray`, read a batch at a time)
  WindowSamples  a flat token array cut in block_size windows; targets = inputs shifted by one
  MapSamples     a map-style data set (`len()`, `[i] -> (x, y)`), optionally decoded by a
                 pool of worker processes (hvdkit.data.workers)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from hvdkit.data.memory import DiskArray
from hvdkit.errors import UserError

Task = Literal["classification", "language_model"]
TASKS: tuple[str, ...] = ("classification", "language_model")


class Samples(Protocol):
    def __len__(self) -> int: ...

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of samples `idx`, as the model takes them (float32 inputs or
        int64 token ids; int64 targets)."""


def model_inputs(x: np.ndarray) -> np.ndarray:
    """Inputs as a model takes them: uint8 scaled to [0, 1], everything else float32."""
    if x.dtype == np.uint8:
        return np.multiply(x, np.float32(1 / 255), dtype=np.float32)
    return x.astype(np.float32, copy=False)


class ArraySamples:
    """Samples `x[i], y[i]` of two arrays; `index` restricts them to a subset (a held-out split).

    `x` may be a numpy array (in memory, or np.load(mmap_mode="r")) or a `DiskArray`.
    With `tokens`, x holds token ids (language modelling) and stays integer.
    """

    def __init__(self, x: np.ndarray | DiskArray, y: np.ndarray,
                 index: np.ndarray | None = None, tokens: bool = False) -> None:
        self.x, self.y, self.index, self.tokens = x, y, index, tokens

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.y)

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.index[idx] if self.index is not None else np.asarray(idx)
        x = self.x.gather(rows) if isinstance(self.x, DiskArray) else self.x[rows]
        x = x.astype(np.int64, copy=False) if self.tokens else model_inputs(x)
        return x, np.asarray(self.y[rows]).astype(np.int64, copy=False)


class WindowSamples:
    """Windows of a flat token array: sample i is tokens[first + i*block : ... + block] and
    its targets the same window one token later (so windows do not overlap)."""

    def __init__(self, tokens: DiskArray, block_size: int, first: int, last: int,
                 vocab_size: int) -> None:
        self.tokens, self.block_size, self.first = tokens, block_size, first
        self.vocab_size = vocab_size
        self.count = max(0, (last - first - 1) // block_size)

    def __len__(self) -> int:
        return self.count

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = self.first + np.asarray(idx, dtype=np.int64) * self.block_size
        windows = self.tokens.spans(starts, self.block_size + 1).astype(np.int64)
        if windows.size and windows.max() >= self.vocab_size:  # a guard, checked up front too
            raise UserError(f"{self.tokens.path}: token id {int(windows.max())} is not below "
                            f"data.vocab_size {self.vocab_size}")
        return windows[:, :-1], windows[:, 1:]


class MapSamples:
    """Samples of a map-style data set (`len()`, `[i] -> (x, y)` numpy), restricted to the
    positions `index`. `pool` (hvdkit.data.workers.DecodePool) decodes batches in other
    processes; without one they are decoded here."""

    def __init__(self, dataset: Any, index: np.ndarray, num_classes: int,
                 pool: Any = None) -> None:
        self.dataset, self.index, self.num_classes, self.pool = dataset, index, num_classes, pool
        self.key = f"map-{id(dataset)}"
        """The pool's name for this data set's decoder."""

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return decode(self.dataset, self.index[idx], self.num_classes)

    def submit(self, idx: np.ndarray) -> Any:
        """Start decoding a batch in the pool; `.get()` gives `take(idx)`."""
        return self.pool.submit(self.key, self.index[idx])


def decode(dataset: Any, positions: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack `dataset[i]` for each position into one batch, checking the labels."""
    items = [dataset[int(i)] for i in positions]
    x = model_inputs(np.stack([np.asarray(item[0]) for item in items]))
    y = np.asarray([item[1] for item in items]).astype(np.int64).reshape(len(items))
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise UserError(f"data set label {bad} is outside [0, {num_classes}) (data.classes)")
    return x, y


@dataclass
class DataSource:
    """A training and a test split and what the model needs to know about them."""

    train: Samples
    test: Samples
    task: Task
    input_shape: tuple[int, ...]
    """Shape of one input sample (channels last for images; (block_size,) for tokens)."""
    input_dtype: str
    """dtype of a batch of inputs as the model gets it: float32, or int64 token ids."""
    num_classes: int
    """Classes (classification) or the vocabulary size (language modelling)."""
    normalization: tuple[Any, Any] | None = None
    """(mean, std) per channel, in [0, 1] units, where input batches come as uint8 images to
    be normalised on the device ((x / 255 - mean) / std, by the adapter); None: batches come
    as the model takes them."""
    class_names: list[str] | None = None
    """The classes' names, in label order (an image folder's class folders)."""

    @property
    def vocab_size(self) -> int:
        return self.num_classes if self.task == "language_model" else 0

    def close(self) -> None:
        """Stop worker processes, if any."""
        for split in (self.train, self.test):
            pool = getattr(split, "pool", None)
            if pool is not None:
                pool.close()
