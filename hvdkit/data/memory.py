"""Files read memory-mapped without growing the process, and the process's peak memory.

A page of a memory-mapped file that a process has read counts in its resident memory until
the kernel needs it back, so reading a file larger than memory once through a plain mapping
makes the process look as large as the file. `MappedArray` hands its pages back
(`madvise(MADV_DONTNEED)`) after every `release_bytes` read: they stay in the page cache,
shared and reclaimable, and re-reading them is a minor fault. The kernel records the
high-water mark before it drops pages, so `peak_rss_mib` stays honest.
"""

from __future__ import annotations

import mmap
import resource
from collections.abc import Iterator
from pathlib import Path

import numpy as np

RELEASE_BYTES = 64 * 2**20
"""Bytes read from one mapping between two releases of its pages."""


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


class MappedArray:
    """A read-only array over a region of a file, memory-mapped, whose pages are released.

    `gather(idx)` copies rows out (sorted indices read the file in order); `array` is the
    mapped view itself, for slicing by callers that then call `note_read`.
    """

    def __init__(self, path: str | Path, dtype: np.dtype | str, shape: tuple[int, ...],
                 offset: int = 0, fortran_order: bool = False,
                 release_bytes: int = RELEASE_BYTES) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.array = np.ndarray(shape, dtype=np.dtype(dtype), buffer=self._mmap, offset=offset,
                                order="F" if fortran_order else "C")
        self.release_bytes = release_bytes
        self._read = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Copy of the rows `idx` (a new array in memory, not a view of the file)."""
        out = self.array[idx]
        self.note_read(out.nbytes)
        return out

    def note_read(self, nbytes: int) -> None:
        """Count bytes read; past `release_bytes`, hand the mapping's pages back."""
        self._read += nbytes
        if self._read >= self.release_bytes:
            self.release()

    def release(self) -> None:
        self._mmap.madvise(mmap.MADV_DONTNEED)
        self._read = 0

    def chunks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """Yield consecutive copies of the whole array, about `release_bytes` at a time (scans
        that check every value, without the file ever becoming resident)."""
        row_bytes = max(1, self.array[:1].nbytes)
        step = rows or max(1, self.release_bytes // 4 // row_bytes)
        for start in range(0, len(self.array), step):
            chunk = np.array(self.array[start : start + step])
            self.note_read(chunk.nbytes)
            yield chunk


def open_npy(path: str | Path) -> MappedArray:
    """A `.npy` file memory-mapped through `MappedArray` (numpy parses and checks the header)."""
    header = np.load(path, mmap_mode="r", allow_pickle=False)
    shape, dtype, offset = header.shape, header.dtype, header.offset
    fortran = bool(header.flags.f_contiguous and not header.flags.c_contiguous)
    del header
    return MappedArray(path, dtype, shape, offset, fortran)
