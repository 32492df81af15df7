"""A data builder for the model tests: byte-level windows of this repository's README.

    data: {builder: "lmdata:byte_windows", args: {block: 16}}   # beside the test's recipe
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import hvdkit
from hvdkit.data import Dataset

ROOT = Path(hvdkit.__file__).resolve().parents[1]


def byte_windows(block: int = 16, chars: int = 40000, test_fraction: float = 0.1) -> Dataset:
    """Windows of `block` bytes; each target is the window one byte later."""
    tokens = np.frombuffer((ROOT / "README.md").read_bytes()[:chars], np.uint8).astype(np.int64)
    n = (len(tokens) - 1) // block
    x = tokens[: n * block].reshape(n, block)
    y = tokens[1 : n * block + 1].reshape(n, block)
    split = n - max(1, round(n * test_fraction))
    return Dataset(x[:split], y[:split], x[split:], y[split:], num_classes=256)
