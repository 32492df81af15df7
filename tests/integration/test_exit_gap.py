"""A finished job exits at once: `hvdkit train -np 2 --set train.compile=true` on both
frameworks, from the command line, ends within `GAP_S` of its last output line.

torch.compile's inductor leaves a pool of compile-worker threads idle for the interpreter's exit
to shut down; the ranks' quick exit (hvdkit.runtime.quick_exit) used to join them and never
returned. The pool starts on a cold compile cache (a fresh TORCHINDUCTOR_CACHE_DIR) with more
than one compile thread (TORCHINDUCTOR_COMPILE_THREADS=2, as any host of 2 cores or more has).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration
GAP_S = 5.0
"""The longest a finished job may take from its last line to its exit."""
CACHE = "TORCHINDUCTOR_CACHE_DIR"
HANG_S = 60.0
"""Past this after the `done` line, the job is taken for hung and killed."""


def timed_run(command: list[str], env: dict[str, str], timeout: float = 400
              ) -> tuple[int | None, list[tuple[float, str]], float]:
    """Run `command`: (its exit code, None if it hung after its done line; its output lines
    with the monotonic time each arrived; the time it exited or was killed)."""
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1,
                           start_new_session=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert job.stdout is not None
        for line in job.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while job.poll() is None:
        done = [t for t, line in lines if "[hvdkit] done:" in line]
        if time.monotonic() > deadline or (done and time.monotonic() - done[0] > HANG_S):
            killed = time.monotonic()
            for proc in [psutil.Process(job.pid), *job_processes(env[CACHE], 0)]:
                with contextlib.suppress(psutil.Error):
                    proc.kill()  # the launcher, mpirun (its own session) and the ranks
            job.wait()
            return None, lines, killed
        time.sleep(0.02)
    ended = time.monotonic()
    time.sleep(0.2)  # the reader takes the last lines
    return job.returncode, lines, ended


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_a_compiled_run_exits_within_seconds_of_its_last_line(
        tmp_path: Path, framework: str) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "hvdkit", "train", "recipes/digits_mlp.yaml",
               "-f", framework, "-np", "2", "--no-progress", "--threads", "1",
               "--set", "train.compile=true", "--set", "train.epochs=1",
               "--set", "train.max_steps=4", "--set", "train.log_every_steps=2",
               "--run-dir", str(run_dir)]
    env = {CACHE: str(tmp_path / "inductor"),
           "TORCHINDUCTOR_COMPILE_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    code, lines, ended = timed_run(command, env)
    output = "\n".join(line for _, line in lines)
    assert lines, "the job printed nothing"
    gap = ended - lines[-1][0]
    print(f"{framework}: exit {gap:.2f}s after the last line ({lines[-1][1][:60]!r})")
    assert code is not None, f"hung after its last line (killed {gap:.0f}s later):\n" \
        f"{output[-3000:]}"
    assert code == 0, output[-3000:]
    assert f"[hvdkit] done: {framework} np=2" in output
    assert json.loads((run_dir / "summary.json").read_text())["compile_seconds"] > 0
    if framework == "torch":  # inductor compiled on a cold cache (its workers started)
        assert any((tmp_path / "inductor").rglob("*.py")), "inductor compiled nothing"
    assert gap < GAP_S, f"exited {gap:.1f}s after its last line"
    assert not job_processes(env[CACHE]), "processes of the job left running"


def job_processes(cache_dir: str, wait_s: float = 5) -> list[psutil.Process]:
    """The processes of this test's job still running after `wait_s`: mpirun, the ranks and
    any compile workers, known by their compile cache folder (a fresh one per job)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(CACHE) == cache_dir and \
                        proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
