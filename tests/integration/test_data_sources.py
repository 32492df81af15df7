"""Real 2-rank jobs on data from disk and the user's own data (workers/data_sources.py):

- npy files on disk train exactly as the same arrays in memory, on both frameworks;
- a map-style data set decoded by 2 worker processes trains as the in-memory arrays;
- a training file of over 1 GB trains with each rank's peak resident memory below half its
  size (PyTorch; measured by the run itself, in summary.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration.jobs import load_arrays, max_abs_diff, run_job, worker

pytestmark = pytest.mark.integration
TOLERANCE = 1e-6
BIG_ROWS, BIG_SHAPE, BIG_BATCH = 349_526, (32, 32, 3), 512  # 1.07 GB of uint8 images


def _digits(folder: Path) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = np.round(raw.images * (255 / 16)).astype(np.uint8)[..., None]
    for part, rows in (("train", slice(0, 1500)), ("test", slice(1500, None))):
        np.save(folder / f"x_{part}.npy", x[rows])
        np.save(folder / f"y_{part}.npy", raw.target[rows])


def _big(folder: Path) -> int:
    """Over 1 GB of images on disk, written in chunks (this process never holds it)."""
    rng = np.random.default_rng(0)
    chunk = rng.integers(0, 256, (4096, *BIG_SHAPE), dtype=np.uint8).tobytes()
    row = int(np.prod(BIG_SHAPE))
    with open(folder / "x_train.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (BIG_ROWS, *BIG_SHAPE)})
        for start in range(0, BIG_ROWS, 4096):
            f.write(chunk[: min(4096, BIG_ROWS - start) * row])
    np.save(folder / "y_train.npy", rng.integers(0, 10, BIG_ROWS))
    return (folder / "x_train.npy").stat().st_size


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("digits-npy")
    _digits(data)
    big = tmp_path_factory.mktemp("big-npy")
    size = _big(big)
    outs = {}
    for framework in ("torch", "tensorflow"):
        out = tmp_path_factory.mktemp(f"data-{framework}")
        extra = ["--big", str(big)] if framework == "torch" else []
        run_job(worker("data_sources", "--framework", framework, "--data", str(data),
                       "--out", str(out), *extra), np=2)
        outs[framework] = out
    return {"outs": outs, "big_bytes": size}


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_npy_on_disk_trains_as_the_same_arrays_in_memory(runs, framework: str) -> None:
    out = runs["outs"][framework]
    diff = max_abs_diff(load_arrays(out / "npy.npz"), load_arrays(out / "memory.npz"))
    assert diff <= TOLERANCE, f"{framework}: npy vs memory differ by {diff:.2e}"
    memory, npy = (json.loads((out / f"{n}.json").read_text()) for n in ("memory", "npy"))
    assert npy["test_accuracy"] == memory["test_accuracy"]  # the same test files too


def test_map_style_data_with_worker_processes_trains_as_in_memory(runs) -> None:
    out = runs["outs"]["torch"]
    diff = max_abs_diff(load_arrays(out / "map.npz"), load_arrays(out / "memory.npz"))
    assert diff <= TOLERANCE, f"map-style + 2 workers vs memory differ by {diff:.2e}"


def test_a_file_over_1gb_trains_in_less_than_half_its_size_per_rank(runs) -> None:
    size = runs["big_bytes"]
    assert size >= 10**9
    summary = json.loads((runs["outs"]["torch"] / "big.json").read_text())
    train, global_batch = BIG_ROWS - round(BIG_ROWS * 0.2), 2 * BIG_BATCH
    assert summary["samples_seen"] == train // global_batch * global_batch  # a whole epoch
    peaks = summary["peak_rss_mib"]
    assert len(peaks) == 2 and min(peaks) > 100  # measured on both ranks
    assert max(peaks) * 2**20 < size / 2, f"peak RSS {peaks} MiB vs file {size / 2**20:.0f} MiB"
