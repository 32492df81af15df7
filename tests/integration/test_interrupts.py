"""Runs that can be stopped and watched: real `hvdkit train -np 2` jobs under Gloo and MPI.

- SIGINT (Gloo) and SIGTERM (MPI) to the launcher's PID mid-run: every process of the job is
  gone within 10 s, no /dev/shm segment of the job is left, the exit code is 130 / 143, and
  `--resume latest` ends with exactly the uninterrupted run's weights. The resumed Gloo run also
  serves the TensorBoard check (its event files hold every logged step) and the PyTorch export
  (the state_dict loads with weights_only=True and gives the run's test accuracy).
- A slow step (2 s, a model that sleeps) and `log_every_steps: 50`: SIGTERM mid-step ends the
  job at the end of that step (not 50 steps later), without evaluating, within one step + 10 s;
  the cut epoch is flagged `complete: false`, the progress names the step reached, and
  `--resume latest` ends with exactly the uninterrupted run's weights.
- A rank frozen with SIGSTOP: named by the watchdog within the warning time, the job ended
  within the shutdown time + 10 s, under MPI and Gloo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from hvdkit.runtime.heartbeat import shm_mappings
from hvdkit.runtime.rank import RANK_VARIABLES
from hvdkit.training.checkpoint import list_checkpoints, load
from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration
RECIPE = "recipes/digits_mlp.yaml"
EPOCHS = 12  # 264 steps at np=2: a few seconds of training after the first epoch
GONE_WITHIN_S = 10


def train_command(run_dir: Path, controller: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hvdkit", "train", RECIPE, "-np", "2", "--controller",
            controller, "--no-progress", "--threads", "1", "--set", f"train.epochs={EPOCHS}",
            "--run-dir", str(run_dir), *extra]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})


def wait_for_training(run_dir: Path, job: subprocess.Popen, timeout: float = 180) -> None:
    """Until the first epoch is logged (the job is past its start-up, mid-run)."""
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and '"kind": "epoch"' in metrics.read_text()):
        assert job.poll() is None, "the job ended before training"
        assert time.time() < deadline, "the job did not start training"
        time.sleep(0.1)


def job_processes(run_dir: Path) -> list[psutil.Process]:
    """The processes of the job: every one whose command line names its run folder."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(run_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def rank_process(run_dir: Path, rank: int) -> psutil.Process:
    for proc in job_processes(run_dir):
        with_env = proc.environ()
        if any(with_env.get(name) == str(rank) for name in RANK_VARIABLES):
            return proc
    raise AssertionError(f"rank {rank} not found")


def wait_gone(run_dir: Path, job: subprocess.Popen, since: float) -> float:
    """Seconds from `since` until the launcher and every process of the job are gone."""
    job.wait(timeout=120)
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
              for p in job_processes(run_dir)):
        assert time.time() - since < 120, "processes of the job are left running"
        time.sleep(0.1)
    return time.time() - since


def final_state(run_dir: Path) -> tuple[dict, dict]:
    payload = load(list_checkpoints(run_dir / "checkpoints")[-1])
    return payload["position"], payload["state"]["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (2-rank sums are exact, so Gloo and MPI give the same bits)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = run(train_command(run_dir, "gloo"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Gloo + SIGINT and MPI + SIGTERM: stopped mid-run, then resumed to the end."""
    results = {}
    for controller, signum in (("gloo", signal.SIGINT), ("mpi", signal.SIGTERM)):
        run_dir = tmp_path_factory.mktemp(controller) / "run"
        log = run_dir.parent / "launcher.log"
        job = start(train_command(run_dir, controller), log)
        wait_for_training(run_dir, job)
        shm = {name for proc in job_processes(run_dir) for name in shm_mappings(proc.pid)}
        sent = time.time()
        job.send_signal(signum)
        took = wait_gone(run_dir, job, sent)
        resumed = run(train_command(run_dir, controller, "--resume", "latest"))
        results[controller] = {
            "signal": signum, "code": job.returncode, "took": took, "output": log.read_text(),
            "shm": shm, "shm_left": {name for name in shm if Path(name).exists()},
            "run_dir": run_dir, "resumed": resumed,
        }
        print(f"{controller}: {signal.Signals(signum).name} → every process gone in {took:.1f}s")
    return results


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_a_signal_stops_the_whole_job_and_resume_is_exact(
        interrupted: dict[str, dict], reference: Path, controller: str) -> None:
    result = interrupted[controller]
    output = result["output"]
    signum = result["signal"]
    name = signal.Signals(signum).name
    assert result["code"] == 128 + signum, output[-3000:]
    assert result["took"] < GONE_WITHIN_S, f"the job took {result['took']:.1f}s to end"
    assert not result["shm_left"], f"left in /dev/shm: {result['shm_left']}"
    if controller == "mpi":
        assert result["shm"], "the MPI ranks mapped no /dev/shm segment (the check saw none)"
    # One line: where it stopped, the checkpoint, and the command that resumes it.
    stop = [line for line in output.splitlines() if line.startswith(f"hvdkit: stopped by {name}")]
    assert len(stop) == 1, output[-3000:]
    assert "ckpt-" in stop[0] and stop[0].endswith(
        f"--run-dir {result['run_dir']} --resume latest"), stop[0]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    resumed = result["resumed"]
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    position, weights = final_state(result["run_dir"])
    ref_position, ref_weights = final_state(reference)
    assert position == ref_position
    assert weights.keys() == ref_weights.keys()
    for key in weights:
        np.testing.assert_array_equal(weights[key], ref_weights[key], err_msg=key)


def test_tensorboard_events_hold_every_logged_step(interrupted: dict[str, dict]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_accumulator import (
        EventAccumulator as PluginAccumulator,
    )
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = interrupted["gloo"]["run_dir"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = sorted(r["step"] + 1 for r in rows if r["kind"] == "step")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # 2 launches
    assert sorted(steps) == logged and logged[-1] == 22 * EPOCHS
    losses = {r["step"] + 1: r["loss"] for r in rows if r["kind"] == "step"}
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(
        [losses[s] for s in steps], rel=1e-6)
    assert "epoch/test_accuracy" in events.Tags()["scalars"]
    plugin = PluginAccumulator(str(run_dir / "tensorboard"))
    plugin.Reload()
    content = plugin.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["recipe.optimizer.lr"].number_value == pytest.approx(0.002)
    assert hparams["framework"].string_value == "torch"


def test_exported_torch_model_gives_the_runs_accuracy(interrupted: dict[str, dict]) -> None:
    import torch

    from hvdkit import load_recipe
    from hvdkit.adapters.torch.models import MODELS
    from hvdkit.data import build_source

    run_dir = interrupted["gloo"]["run_dir"]
    done = run([sys.executable, "-m", "hvdkit", "export", str(run_dir)])
    assert done.returncode == 0, done.stdout + done.stderr
    recipe = load_recipe(run_dir / "export" / "recipe.yaml")
    weights = torch.load(run_dir / "export" / "model.pt", weights_only=True)
    data = build_source(recipe.data, recipe.train.seed)
    x_test, y_test = data.test.take(np.arange(len(data.test)))
    model = MODELS.get(recipe.model.name)(recipe.model, data.input_shape, data.num_classes)
    model.load_state_dict(weights)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(1).numpy()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert float((predicted == y_test).mean()) == pytest.approx(summary["test_accuracy"],
                                                                     abs=1e-9)


SLOW_STEP_S = 2.0
SLOW_RECIPE = """name: slow_stop
model: {builder: "tests.integration.workers.slow_model:build", args: {hidden: 32}}
data: {name: digits}
optimizer: {name: adam, lr: 0.002}
train: {batch_size: 32, epochs: 2, seed: 0, log_every_steps: 50}
"""


def forwards_so_far(log: Path) -> list[int]:
    """Training forwards each rank has begun (workers/slow_model.py's per-process logs)."""
    return [len(f.read_text().splitlines()) for f in log.parent.glob(f"{log.name}.*")]


def test_a_slow_step_stops_at_its_end_and_resume_is_exact(tmp_path: Path) -> None:
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(SLOW_RECIPE)

    def command(run_dir: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "hvdkit", "train", str(recipe), "-np", "2",
                "--controller", "mpi", "--threads", "1", "--run-dir", str(run_dir), *extra]

    reference = tmp_path / "reference"
    done = run(command(reference, "--no-progress"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run_dir, steps_log, log = tmp_path / "run", tmp_path / "forwards", tmp_path / "launcher.log"
    job = start(command(run_dir), log, {"HVDKIT_TEST_STEP_SLEEP": str(SLOW_STEP_S),
                                         "HVDKIT_TEST_STEP_LOG": str(steps_log)})
    deadline = time.time() + 180
    while min(forwards_so_far(steps_log) or [0]) < 3 or len(forwards_so_far(steps_log)) < 2:
        assert job.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the job did not start training"
        time.sleep(0.05)
    time.sleep(SLOW_STEP_S / 2)  # mid-step
    in_flight = max(forwards_so_far(steps_log))
    sent = time.time()
    job.send_signal(signal.SIGTERM)
    took = wait_gone(run_dir, job, sent)
    output = log.read_text()
    print(f"SIGTERM in step {in_flight} of {SLOW_STEP_S:.0f} s steps → every process gone in "
          f"{took:.1f}s")
    assert job.returncode == 143, output[-3000:]
    assert took < SLOW_STEP_S + GONE_WITHIN_S, f"the job took {took:.1f}s to end"
    stop = [line for line in output.splitlines() if line.startswith("hvdkit: stopped by SIGTERM")]
    assert len(stop) == 1, output[-3000:]
    reached = int(stop[0].split("after step ")[1].split(";")[0])
    assert reached in (in_flight, in_flight + 1), (in_flight, stop[0])  # not at step 50
    assert f"[hvdkit] stopped at step {reached}/44 ({100 * reached / 44:.0f}%)" in output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["complete"] is False and epochs[0]["step"] == reached
    assert "test_accuracy" not in epochs[0]  # stopped: no evaluation
    assert [r["step"] + 1 for r in records if r["kind"] == "step"] == list(range(1, reached + 1))
    resumed = run(command(run_dir, "--no-progress", "--resume", "latest"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    position, weights = final_state(run_dir)
    ref_position, ref_weights = final_state(reference)
    assert position == ref_position
    for key in weights:
        np.testing.assert_array_equal(weights[key], ref_weights[key], err_msg=key)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["complete"] for r in records if r["kind"] == "epoch"] == [False, True, True]


@pytest.mark.parametrize("controller", ["mpi", "gloo"])
def test_frozen_rank_is_named_and_the_job_ended(tmp_path: Path, controller: str) -> None:
    warn, shutdown = 3, 8
    run_dir = tmp_path / "run"
    log = tmp_path / "launcher.log"
    job = start(train_command(run_dir, controller, "--set", "train.epochs=500",
                              "--stall-warning-seconds", str(warn),
                              "--stall-shutdown-seconds", str(shutdown)), log)
    wait_for_training(run_dir, job)
    time.sleep(1)  # a heartbeat or two since the first steps
    shm = {name for proc in job_processes(run_dir) for name in shm_mappings(proc.pid)}
    frozen = rank_process(run_dir, 1)
    frozen.suspend()  # SIGSTOP
    stopped_at = time.time()
    took = wait_gone(run_dir, job, stopped_at)
    output = log.read_text()
    print(f"{controller}: the job ended {took:.1f}s after rank 1 froze")
    warning = f"hvdkit: warning: rank 1 (pid {frozen.pid} on "
    assert warning in output, output[-3000:]
    assert "warning: rank 0" not in output
    assert job.returncode == 1
    assert took < shutdown + GONE_WITHIN_S, f"the job took {took:.0f}s to end"
    assert f"hvdkit: the job failed: rank 1 (pid {frozen.pid} on" in output, output[-3000:]
    assert "went silent (last heard after step" in output and "rank 0 (pid" not in output
    assert "traceback is above" not in output
    assert not {name for name in shm if Path(name).exists()}, "/dev/shm segments left"
