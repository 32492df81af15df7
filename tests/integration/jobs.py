"""Launching real Horovod jobs from tests, through hvdkit's own launcher command builder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvdkit.launch.job import job_command
from hvdkit.launch.options import LaunchOptions

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"


@dataclass
class JobResult:
    returncode: int
    output: str
    seconds: float


def run_job(program: list[str], np: int = 2, controller: str = "mpi", timeout: float = 300,
            env: dict[str, str] | None = None, check: bool = True,
            options: LaunchOptions | None = None) -> JobResult:
    """Run `program` (an argv) on `np` ranks as `hvdkit train` would (mpirun on one host with
    MPI, else horovodrun); fail the test on error."""
    options = options or LaunchOptions(np=np, controller=controller)
    command = job_command(options, program) if options.np > 1 or options.multi_host \
        else program
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    result = JobResult(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - started)
    if check and proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}): {' '.join(command)}\n"
                             f"{result.output[-6000:]}")
    return result


def worker(name: str, *args: str) -> list[str]:
    """The argv that runs tests/integration/workers/<name>.py with this Python."""
    return [sys.executable, str(WORKERS / f"{name}.py"), *args]


def load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays a worker saved with `np.savez(path, *arrays)`, in order."""
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest elementwise difference between two parameter lists of the same shapes."""
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
