"""Arrays on disk read a batch at a time without growing the process, and its peak memory.

Why not a plain memory map: a page of a mapped file that a process has touched counts in its
resident memory until the kernel wants it back, and with large page-cache folios (ext4 on a
recent kernel) touching one 12 KiB sample maps about a megabyte around it -- measured: one
batch of 512 random rows of a 1 GiB .npy file (6 MiB of data) made the process 600 MiB
larger. `DiskArray` reads the rows it is asked for with `os.preadv` straight into the batch
(consecutive rows in one call; the loader sorts each batch's indices, so a file is read in
order): the file stays in the page cache, shared and reclaimable, and a rank holds only its
batches.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SCAN_BYTES = 16 * 2**20
"""Bytes per chunk when a check reads a whole file."""


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's VmHWM: unlike getrusage's ru_maxrss, it does not carry over the peak of the
    process that forked this one before its exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class DiskArray:
    """A read-only C-ordered array stored in a file from byte `offset` on, read on demand."""

    def __init__(self, path: str | Path, dtype: np.dtype | str, shape: tuple[int, ...],
                 offset: int = 0) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.offset = offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict:  # a pickled copy (a forked worker's) opens its own file
        return {k: v for k, v in self.__dict__.items() if k != "_fd"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd = os.open(self.path, os.O_RDONLY)

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (sorted is fastest: runs of consecutive rows are one read each)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"{self.path}: row index outside [0, {len(self)})")
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        starts, ends = np.r_[0, breaks], np.r_[breaks, len(idx)]
        self._read(memoryview(out.reshape(-1).view(np.uint8)), idx, starts, ends)
        return out

    def spans(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows starts[i] .. starts[i] + length - 1 for each i, as a (len(starts), length, ...)
        array: the token windows of a flat file."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length, *self.shape[1:]), dtype=self.dtype)
        if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"{self.path}: span outside [0, {len(self)})")
        view = memoryview(out.reshape(-1).view(np.uint8))
        size = length * self.row_bytes
        for i, start in enumerate(starts.tolist()):
            self._pread(view[i * size : (i + 1) * size], self.offset + start * self.row_bytes)
        return out

    def _read(self, view: memoryview, idx: np.ndarray, starts: np.ndarray,
              ends: np.ndarray) -> None:
        row = self.row_bytes
        for s, e, first in zip(starts.tolist(), ends.tolist(), idx[starts].tolist(),
                               strict=True):
            self._pread(view[s * row : e * row], self.offset + first * row)

    def _pread(self, view: memoryview, at: int) -> None:
        while len(view):
            n = os.preadv(self._fd, [view], at)
            if n <= 0:
                raise OSError(f"{self.path}: file ended at byte {at} (truncated?)")
            view, at = view[n:], at + n

    def chunks(self) -> Iterator[np.ndarray]:
        """The whole array in consecutive chunks of about SCAN_BYTES (checks of every value)."""
        step = max(1, SCAN_BYTES // max(1, self.row_bytes))
        for start in range(0, len(self), step):
            yield self.gather(np.arange(start, min(start + step, len(self))))


def open_npy(path: str | Path) -> DiskArray:
    """A `.npy` file as a `DiskArray` (numpy parses and checks its header)."""
    header = np.load(path, mmap_mode="r", allow_pickle=False)
    shape, dtype, offset = header.shape, header.dtype, header.offset
    fortran = bool(header.flags.f_contiguous and not header.flags.c_contiguous)
    del header
    if fortran:
        raise ValueError("stored in Fortran order; save it with np.ascontiguousarray")
    return DiskArray(path, dtype, shape, offset)
