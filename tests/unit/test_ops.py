"""Run operations without a Horovod job: the watchdog's judgement, failure messages, the resume
command, run-folder safety, unreadable recipes, TensorBoard event files and a TF export."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.errors import UserError
from hvdkit.launch.failures import Printed, failure_lines, host_lines
from hvdkit.launch.hosts import rank_hosts
from hvdkit.launch.monitor import Monitor
from hvdkit.runtime.heartbeat import CONSEQUENCE, ERROR, FAILED
from hvdkit.runtime.jobdir import JobDir, write_json
from hvdkit.runtime.stop import resume_command
from hvdkit.training.rundir import prepare_run_dir

ROOT = Path(__file__).resolve().parents[2]


def beat(job: JobDir, rank: int, n: int, t: float, step: int = 5, **exit_info: object) -> None:
    write_json(job.heartbeat_path(rank), {"rank": rank, "host": f"h{rank}", "pid": 100 + rank,
                                          "beat": n, "step": step, "time": t, "shm": [],
                                          "exit": None, "exit_kind": None, **exit_info})


def monitor(tmp_path: Path, warn: float = 3, shutdown: float = 8) -> tuple[JobDir, Monitor,
                                                                           list[str], io.StringIO]:
    job = JobDir(tmp_path)
    ended: list[str] = []
    out = io.StringIO()
    return job, Monitor(job, warn, shutdown, end_job=ended.append, out=out), ended, out


def test_a_silent_rank_is_named_then_ends_the_job(tmp_path: Path) -> None:
    job, mon, ended, out = monitor(tmp_path)
    for n, now in enumerate([0.0, 1.0, 2.0]):
        beat(job, 0, n, now)
        beat(job, 1, n if now < 1.5 else 1, now)  # rank 1 stops beating after t=1
        mon.poll(now)
    mon.poll(4.0)  # rank 1 silent for 3 s: warned; rank 0 beat at 2
    assert "warning: rank 1 (pid 101 on h1) has sent no heartbeat for 3s (last heard after " \
        "step 5): it is frozen or stopped; the job ends after 8s" in out.getvalue()
    assert "rank 0" not in out.getvalue() and not ended
    for now in (5.0, 6.0, 7.0, 8.0, 9.0):
        beat(job, 0, int(now), now)
        mon.poll(now)
    assert len(ended) == 1 and ended[0].startswith("rank 1 (pid 101 on h1) silent for 8s")
    line = failure_lines(1, mon, Printed())[0]
    assert line == ("hvdkit: the job failed: rank 1 (pid 101 on h1) went silent (last heard "
                    "after step 5); the watchdog ended the job (--stall-shutdown-seconds)")


def test_first_failure_is_the_first_to_fail_not_the_ones_that_followed(tmp_path: Path) -> None:
    job, mon, _, _ = monitor(tmp_path, warn=0, shutdown=0)
    # rank 1 killed (vanished at t=10), rank 0's collective failed after it (a consequence)
    beat(job, 1, 20, 10.0)
    beat(job, 0, 22, 10.6, exit=1, exit_kind=CONSEQUENCE, exit_time=10.6)
    mon.poll(11)
    line = failure_lines(1, mon, Printed(lost={0}))[0]
    assert "rank 1 (pid 101 on h1) failed first (last heard after step 5): it ended without " \
        "a message" in line
    assert "traceback" not in line
    # rank 1 raised (traceback printed), rank 0 killed by the launcher afterwards
    beat(job, 1, 21, 10.0, exit=1, exit_kind=FAILED, exit_time=10.0)
    beat(job, 0, 23, 10.4)
    mon.poll(12)
    assert failure_lines(1, mon, Printed(tracebacks={1}))[0].endswith(
        "rank 1 (pid 101 on h1) failed first (last heard after step 5): it raised an error; its "
        "traceback is above")


def test_the_same_error_on_every_rank_is_said_once(tmp_path: Path) -> None:
    job, mon, _, _ = monitor(tmp_path)
    for rank in (0, 1):
        beat(job, rank, 3, 5.0 + rank, step=None, exit=2, exit_kind=ERROR, exit_time=5.0 + rank,
             error="train.batch_size is too large")
    mon.poll(6)
    assert failure_lines(2, mon, Printed(errors={0, 1})) == [
        "hvdkit: the job failed (exit code 2): every rank stopped with the same error: "
        "train.batch_size is too large"]


def test_a_job_that_never_started_says_so(tmp_path: Path) -> None:
    _, mon, _, _ = monitor(tmp_path)
    mon.poll(1)
    assert failure_lines(1, mon, Printed()) == [
        "hvdkit: the job failed (exit code 1) before any rank reported starting; the "
        "launcher's messages above say why"]
    # without heartbeats at all: what the output said, and a traceback only where printed
    assert failure_lines(9, None, Printed(lost={1})) == [
        "hvdkit: the job failed (exit code 9): rank 1 failed; it printed no error"]


def test_hosts_that_never_started_are_not_called_lost(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    job, mon, _, _ = monitor(tmp_path)
    beat(job, 0, 1, 1.0)  # rank 0 (localhost) started, rank 1 (a host ssh cannot resolve) not
    mon.poll(1)
    hosts = rank_hosts("localhost:1,nohost.invalid:1", None, 2)
    assert hosts == ["localhost", "nohost.invalid"]
    lines = host_lines(hosts, mon, 20)
    assert len(lines) == 1 and lines[0].startswith("hvdkit: could not start on nohost.invalid: ")
    assert "localhost" not in capsys.readouterr().err


def test_rank_hosts_fill_slots_in_order(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("a slots=2\n# comment\nb slots=1\nc\n")
    assert rank_hosts(None, str(hostfile), 4) == ["a", "a", "b", "c"]
    assert rank_hosts("x:2,y:2", None, 3) == ["x", "x", "y"]


def test_resume_command_replaces_run_dir_and_resume() -> None:
    argv = ["train", "r.yaml", "-np", "2", "--run-dir", "old", "--resume", "--overwrite",
            "--set", "train.epochs=3"]
    assert resume_command(argv, "runs/x") == ("hvdkit train r.yaml -np 2 --set train.epochs=3 "
                                              "--run-dir runs/x --resume latest")


def test_run_folder_rules(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run_dir(run, None, False)  # a new folder
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    prepare_run_dir(run, None, False)  # a folder without run files
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "checkpoints").mkdir()
    with pytest.raises(UserError, match=r"holds another run \(metrics.jsonl, checkpoints\); "
                                        r"continue it with --resume latest, replace it with "
                                        r"--overwrite"):
        prepare_run_dir(run, None, False)
    with pytest.raises(UserError, match="holds another run"):
        prepare_run_dir(run, str(tmp_path / "elsewhere"), False)  # resuming another run into it
    prepare_run_dir(run, "latest", False)
    prepare_run_dir(run, str(run / "checkpoints"), False)
    with pytest.raises(UserError, match="--overwrite would delete"):
        prepare_run_dir(run, "latest", True)
    prepare_run_dir(run, None, True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def hvdkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_a_run_folder_and_an_unreadable_recipe(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("x: 1\n")
    done = hvdkit("train", "recipes/digits_mlp.yaml", "--run-dir", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"hvdkit: error: run folder {tmp_path} holds another run")
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    for path, why in ((binary, "not UTF-8 text"), (tmp_path, "is not a file")):
        done = hvdkit("train", str(path))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert why in done.stderr and "Traceback" not in done.stderr


def test_tensorboard_writes_readable_events_without_tensorflow(tmp_path: Path) -> None:
    code = f"""
import sys
from hvdkit.training.tensorboard import TensorBoard
tb = TensorBoard({str(tmp_path)!r}, {{"recipe": {{"optimizer": {{"lr": 0.1}}}}, "np": 2}})
tb.on_train_begin({{}})
for step in range(3):
    tb.on_step_end(step, {{"loss": 1.0 / (step + 1), "accuracy": 0.5, "epoch": 0}})
tb.on_epoch_end(0, {{"train_loss": 0.5, "test_accuracy": 0.9, "step": 3}})
tb.on_train_end({{}})
assert not any(m.startswith("tensorflow") for m in sys.modules), "TensorFlow was imported"
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == \
        [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [(e.step, e.value) for e in events.Scalars("epoch/test_accuracy")] == \
        [(3, pytest.approx(0.9))]


def test_a_second_signal_ends_every_process_at_once(tmp_path: Path) -> None:
    import os
    import signal
    import time

    import psutil

    from hvdkit.launch.guard import JobGuard

    job = JobDir(tmp_path)
    tree = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & wait"],
                            start_new_session=True)
    time.sleep(0.3)
    children = psutil.Process(tree.pid).children(recursive=True)
    assert len(children) == 2
    out = io.StringIO()
    guard = JobGuard(job, out=out)
    guard.attach(tree, list)
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first: the ranks are asked to stop
        assert job.stop_requested() == signal.SIGINT and tree.poll() is None
        started = time.time()
        os.kill(os.getpid(), signal.SIGINT)  # the second: every process ends now
        tree.wait(timeout=10)
        psutil.wait_procs(children, timeout=10)
        assert time.time() - started < 5
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    finally:
        guard.close(set())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert guard.ended == "a second SIGINT"
    assert guard.report(tree.returncode, None, ["train", "r.yaml"]) == 130
    assert "SIGINT again: ending every process of the job now" in out.getvalue()
    assert "stopped by SIGINT before the ranks wrote a checkpoint (a second SIGINT)" \
        in out.getvalue()
