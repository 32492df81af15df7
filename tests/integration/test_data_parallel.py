"""Real 2-rank Horovod jobs (MPI and Gloo, both frameworks) against single-process training.

One job per (framework, controller) runs every scenario of workers/data_parallel.py; one
process per framework computes the references. Parameters must agree to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration.jobs import load_arrays, max_abs_diff, run_job, worker

pytestmark = pytest.mark.integration
FRAMEWORKS = ["torch", "tensorflow"]
CONTROLLERS = ["mpi", "gloo"]
TOLERANCE = 1e-5
_cache: dict[tuple, Path] = {}


def _run(tmp_path_factory, framework: str, controller: str | None) -> Path:
    key = (framework, controller)
    if key not in _cache:
        out = tmp_path_factory.mktemp(f"dp-{framework}-{controller or 'reference'}")
        if controller is None:
            run_job(worker("data_parallel", "--framework", framework, "--out", str(out),
                           "--reference"), np=1)
        else:
            extra = ["--convergence"] if controller == "mpi" else []
            run_job(worker("data_parallel", "--framework", framework, "--out", str(out),
                           *extra), np=2, controller=controller)
        _cache[key] = out
    return _cache[key]


@pytest.fixture(params=FRAMEWORKS)
def framework(request) -> str:
    return request.param


@pytest.fixture(params=CONTROLLERS)
def controller(request) -> str:
    return request.param


@pytest.fixture
def runs(tmp_path_factory, framework: str, controller: str) -> tuple[Path, Path]:
    return _run(tmp_path_factory, framework, None), _run(tmp_path_factory, framework, controller)


@pytest.mark.parametrize("name, reference", [
    ("mlp", "mlp"),            # op average, batch 16 x 2 ranks == batch 32
    ("cnn", "mlp"),            # same, with convolutions (compared to its own reference below)
    ("sum", "mlp"),            # op sum with half the lr == average
    ("accumulate", "mlp"),     # batch 8 x 2 micro-batches x 2 ranks == batch 32
])
def test_two_ranks_equal_one_process(runs, name: str, reference: str) -> None:
    ref_dir, dp_dir = runs
    reference = "cnn" if name == "cnn" else reference
    diff = max_abs_diff(load_arrays(dp_dir / f"{name}.npz"),
                        load_arrays(ref_dir / f"{reference}.npz"))
    assert diff <= TOLERANCE, f"{name}: max abs difference {diff:.2e}"


def test_accumulation_in_one_process_equals_larger_batch(tmp_path_factory, framework) -> None:
    ref_dir = _run(tmp_path_factory, framework, None)
    diff = max_abs_diff(load_arrays(ref_dir / "accumulate.npz"), load_arrays(ref_dir / "mlp.npz"))
    assert diff <= TOLERANCE


def test_fp16_compression_stays_close(runs) -> None:
    ref_dir, dp_dir = runs
    diff = max_abs_diff(load_arrays(dp_dir / "fp16.npz"), load_arrays(ref_dir / "mlp.npz"))
    assert diff <= 1e-3, f"fp16 compression drifted {diff:.2e}"


def test_broadcast_equalises_different_initial_weights(runs) -> None:
    _, dp_dir = runs
    before = [load_arrays(dp_dir / f"broadcast_initial.rank{r}.npz") for r in (0, 1)]
    after = [load_arrays(dp_dir / f"broadcast_after.rank{r}.npz") for r in (0, 1)]
    assert max_abs_diff(*before) > 0.01, "the ranks did not start from different weights"
    assert max_abs_diff(*after) == 0.0


def test_epoch_shards_are_disjoint_and_cover(runs) -> None:
    _, dp_dir = runs
    shards = [np.load(dp_dir / f"shard.rank{r}.npy") for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    # digits: 1797 samples, 20% held out for testing
    assert sorted(np.concatenate(shards).tolist()) == list(range(1797 - 359))


def test_digits_mlp_converges_on_two_ranks(tmp_path_factory, framework) -> None:
    summary = json.loads((_run(tmp_path_factory, framework, "mpi") / "convergence.json")
                         .read_text())
    assert summary["np"] == 2
    assert summary["test_accuracy"] >= 0.95, summary
