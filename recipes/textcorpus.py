"""The text corpus of gpt_text.yaml: the Python standard library's own source files, which
every machine with Python has offline, as byte-level tokens (a data builder,
hvdkit.models.builders).

The top-level `*.py` files of the running Python's standard library (`sysconfig`'s "stdlib"
path), in sorted order, joined: 4.7 MB for CPython 3.11.7. Windows of `block_size` bytes that do
not overlap; each target is its window one byte later; the last `test_fraction` of the corpus
is the test set. The same bytes as this shell command writes to a file:

    LC_ALL=C cat "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"/*.py
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from hvdkit.data import Dataset


def stdlib_bytes() -> np.ndarray:
    folder = Path(sysconfig.get_path("stdlib"))
    files = sorted(folder.glob("*.py"), key=lambda p: p.name.encode())
    return np.frombuffer(b"".join(p.read_bytes() for p in files), np.uint8)


def stdlib_windows(block_size: int = 128, test_fraction: float = 0.05) -> Dataset:
    tokens = stdlib_bytes()
    split = len(tokens) - round(len(tokens) * test_fraction)

    def windows(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (len(part) - 1) // block_size
        x = part[: n * block_size].reshape(n, block_size).astype(np.int64)
        y = part[1 : n * block_size + 1].reshape(n, block_size).astype(np.int64)
        return x, y

    return Dataset(*windows(tokens[:split]), *windows(tokens[split:]), num_classes=256)
