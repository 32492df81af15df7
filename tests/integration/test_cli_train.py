"""`hvdkit train` end to end: a real 2-rank job from the command line, its files and its
console (no launcher tags, no framework start-up lines, user mpirun arguments taken), the
console's handling of other ranks' warnings, and a crashing worker that ends the job non-zero,
naming its rank, without a hang."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.jobs import ROOT, worker

pytestmark = pytest.mark.integration


def hvdkit_train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("framework, controller", [("torch", "mpi"), ("tensorflow", "gloo")])
def test_train_writes_run_files(tmp_path: Path, framework: str, controller: str) -> None:
    run_dir = tmp_path / "run"
    # mpirun arguments that argparse and OpenMPI used to refuse: a value that starts with
    # dashes, and an MCA parameter hvdkit sets too (the user's value wins)
    user_mpi = ["--report-bindings", "--mca", "btl_tcp_if_include", "lo"]
    result = hvdkit_train("recipes/digits_mlp.yaml", "-f", framework, "-np", "2",
                          "--controller", controller, "--set", "train.epochs=3",
                          "--run-dir", str(run_dir), "--mpi-args", " ".join(user_mpi),
                          *(["--timeline"] if controller == "mpi" else []))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    launched = ("launching: mpirun " if controller == "mpi"
                else "-m hvdkit.launch.horovodrun -np 2 --gloo")
    assert "[hvdkit] launching: " in output and launched in output
    # the console: rank 0's lines whole and untagged, no framework start-up noise
    assert "<stderr>:" not in output and "<stdout>:" not in output
    assert "absl::InitializeLog" not in output and "oneDNN" not in output
    assert "[hvdkit] epoch 3/3 | train loss" in output
    assert f"[hvdkit] done: {framework} np=2 test accuracy" in output

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["recipe"]["train"]["epochs"] == 3 and config["world"]["size"] == 2
    assert config["threads_per_rank"] >= 1
    assert config["host_allocator"]["host_allocator"] == "tuned"  # glibc's mallopt took it
    if controller == "mpi":  # --timeline: Horovod's timeline of the job, in the run folder
        assert "ALLREDUCE" in (run_dir / "timeline.json").read_text()
        assert config["launch"]["resolved_mpi_args"] == \
            ["--mca", "mpi_yield_when_idle", "1", *user_mpi]
        assert "MCW rank 1" in output  # --report-bindings took effect

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(epochs) == 3 and summary["steps"] == len(steps) == 3 * (1438 // 64)
    assert {"loss", "accuracy", "samples_per_sec", "step_time", "lr"} <= set(steps[0])
    assert epochs[-1]["test_accuracy"] == summary["test_accuracy"] > 0.8
    assert summary["np"] == 2 and summary["global_batch"] == 64


def test_console_shows_other_ranks_warnings_once_and_prefixed() -> None:
    code = ("import sys; from hvdkit.launch.job import run_job; "
            "from hvdkit.launch.options import LaunchOptions; "
            f"sys.exit(run_job(LaunchOptions(np=2), {worker('console')!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first half, second half\n"
    err = result.stderr.splitlines()
    assert sum("UserWarning: every rank says this" in line for line in err) == 1
    own = [line for line in err if "only rank 1 says this" in line]
    assert len(own) == 1 and own[0].startswith("rank 1: ")
    assert not any("absl" in line or "oneDNN" in line or "chatter" in line for line in err)


def test_crashing_rank_ends_the_job_and_is_named() -> None:
    code = ("import sys; from hvdkit.launch.job import run_job; "
            "from hvdkit.launch.options import LaunchOptions; "
            f"sys.exit(run_job(LaunchOptions(np=2), {worker('crash')!r}))")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    elapsed = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "RuntimeError: injected failure at step 3" in output  # the rank's traceback
    assert "hvdkit: the job failed (exit code" in output and "rank 1 failed" in output
    assert "): rank 1 (pid " in output and "its traceback is above" in output
    assert elapsed < 60, f"took {elapsed:.0f}s to end"


def test_failure_messages_say_only_what_is_known(tmp_path: Path) -> None:
    # mpirun refuses an option: no rank ever started, and none printed a traceback.
    refused = hvdkit_train("recipes/digits_mlp.yaml", "-np", "2", "--run-dir",
                           str(tmp_path / "a"), "--mpi-args", "--no-such-option")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and 'unknown option "--no-such-option"' in output
    assert "hvdkit: the job failed (exit code 1) before any rank reported starting" in output
    assert "traceback" not in output.lower()
    # Every rank refuses the batch size: the first to stop is named, its error (not a traceback)
    # is above; when every rank's last beat says the same error, it is said once.
    too_big = hvdkit_train("recipes/digits_mlp.yaml", "-np", "2", "--controller", "gloo",
                           "--threads", "1", "--run-dir", str(tmp_path / "b"), "--set",
                           "train.batch_size=5000")
    output = too_big.stdout + too_big.stderr
    assert too_big.returncode != 0
    error = ("train.batch_size x parallel.accumulation x ranks = 10000 is larger than the 1438 "
             "training samples")
    assert re.search(rf"hvdkit: error \(rank [01]\): {error}", output), output[-3000:]
    assert re.search(r"hvdkit: the job failed \(exit code \d+\): (rank [01] \(pid \d+ on "
                     r"localhost\) failed first \(last heard before its first step\): it "
                     rf"stopped with the error above|every rank stopped with the same error: "
                     rf"{error})\n", output), output[-3000:]
    assert "traceback is above" not in output
    # One host cannot be reached: the job started nowhere; that host is named with ssh's
    # reason, and the local host is not called lost "during the run".
    bad_host = hvdkit_train("recipes/digits_mlp.yaml", "-np", "2", "--controller", "gloo",
                            "-H", "localhost:1,nohost.invalid:1", "--run-dir", str(tmp_path / "c"))
    output = bad_host.stdout + bad_host.stderr
    assert bad_host.returncode != 0
    assert "hvdkit: could not start on nohost.invalid: ssh: Could not resolve hostname" in output
    assert "localhost is unreachable" not in output and "during the run" not in output
    assert "could not start on localhost" not in output
