"""hvdkit on a GPU host (skipped without CUDA): each rank trains on its own GPU, with the same
numbers as on the CPU; placement over a GPU and the CPU; NCCL across GPUs; a clear error where
ranks outnumber GPUs. Run on a GPU host with `make test-gpu` (Horovod built with NCCL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hvdkit.launch.options import LaunchOptions
from tests.integration.jobs import load_arrays, max_abs_diff, run_job

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
WORKER = Path(__file__).resolve().parent / "workers" / "gpu.py"
TOLERANCE = 1e-5
_cache: dict[str, Path] = {}


def _run(tmp_path_factory, mode: str, np_: int = 1) -> Path:
    if mode not in _cache:
        out = tmp_path_factory.mktemp(f"gpu-{mode}")
        run_job([sys.executable, str(WORKER), "--out", str(out), "--mode", mode],
                options=LaunchOptions(np=np_, controller="gloo"))
        _cache[mode] = out
    return _cache[mode]


def _device(out: Path, name: str) -> str:
    return json.loads((out / f"{name}.json").read_text())["device"]


def test_training_on_the_gpu_matches_the_cpu(tmp_path_factory) -> None:
    out = _run(tmp_path_factory, "devices")
    assert _device(out, "cpu") == "cpu" and _device(out, "auto") == "cuda:0"
    assert max_abs_diff(load_arrays(out / "auto.npz"), load_arrays(out / "cpu.npz")) <= TOLERANCE


def test_placement_over_gpu_and_cpu_matches_unsplit(tmp_path_factory) -> None:
    pytest.importorskip("mpi4py.MPI", reason="placement runs through the pipeline adapter")
    out = _run(tmp_path_factory, "placement")
    reference = _run(tmp_path_factory, "devices")
    assert _device(out, "placed") == "cuda:0,cpu"
    assert max_abs_diff(load_arrays(out / "placed.npz"),
                        load_arrays(reference / "cpu.npz")) <= TOLERANCE


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_ranks_on_two_gpus_match_one_process_on_the_double_batch(tmp_path_factory) -> None:
    out = _run(tmp_path_factory, "data-parallel", np_=2)
    reference = _run(tmp_path_factory, "devices")
    assert _device(out, "data_parallel") == "cuda:0"
    assert max_abs_diff(load_arrays(out / "data_parallel.npz"),
                        load_arrays(reference / "cpu32.npz")) <= TOLERANCE


@pytest.mark.skipif(torch.cuda.device_count() != 1, reason="needs exactly 1 GPU")
def test_more_ranks_than_gpus_under_nccl_is_a_clear_error(tmp_path_factory) -> None:
    import horovod.torch as hvd

    if not hvd.nccl_built():
        pytest.skip("Horovod built without NCCL lets ranks share a GPU")
    out = tmp_path_factory.mktemp("gpu-shared")
    result = run_job([sys.executable, str(WORKER), "--out", str(out), "--mode", "data-parallel"],
                     options=LaunchOptions(np=2, controller="gloo"), check=False)
    assert result.returncode != 0
    assert "NCCL needs a GPU per rank" in result.output
