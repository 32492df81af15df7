"""Every exit path ends: a finished process is not held by threads a framework left idle
(hvdkit.runtime.quick_exit), and a stop that comes after the run completed says so and exits 0
(hvdkit.launch.guard), with a real signal to this process and a real child as the job."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hvdkit.launch.guard import JobGuard
from hvdkit.runtime.jobdir import JobDir
from hvdkit.runtime.quick_exit import finish_threads

COMPLETED = {"step": 66, "run_dir": "/runs/digits", "checkpoint": "/runs/digits/ckpt-66.pt"}


def test_an_idle_pool_holds_the_exit_no_longer_than_the_foreign_wait() -> None:
    pool = ThreadPoolExecutor(2, thread_name_prefix="idle")  # as inductor leaves its own
    pool.submit(time.sleep, 0).result()
    own = threading.Thread(target=time.sleep, args=(0.3,), name="hvdkit-test")
    own.start()
    try:
        started = time.monotonic()
        left = finish_threads(own_wait_s=5, foreign_wait_s=0.2)
        took = time.monotonic() - started
        assert not own.is_alive()  # hvdkit's own thread was waited for until it ended
        assert left and all(t.name.startswith("idle") for t in left)
        assert took < 1.5, f"finish_threads took {took:.1f}s"
    finally:
        pool.shutdown()


def test_quick_exit_ends_a_process_an_idle_pool_would_hold() -> None:
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "from hvdkit.runtime.quick_exit import quick_exit\n"
            # held, as inductor holds its own (a pool collected would end its threads)
            "pool = ThreadPoolExecutor(2)\n"
            "pool.submit(print, 'worked', flush=True).result()\n"
            "quick_exit(3)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 3, done.stderr
    assert done.stdout == "worked\n"
    assert time.monotonic() - started < 30  # an unbounded join never returned (timeout)


def guarded_job(tmp_path: Path, seconds: float) -> tuple[JobGuard, io.StringIO, subprocess.Popen]:
    """A JobGuard watching a child that sleeps `seconds` (the job), its signal handlers on."""
    out = io.StringIO()
    guard = JobGuard(JobDir(tmp_path), out=out)
    job = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    guard.attach(job, list)
    return guard, out, job


def test_a_stop_after_the_run_completed_says_so_and_exits_0(tmp_path: Path) -> None:
    guard, out, job = guarded_job(tmp_path, 120)  # the ranks, held after they finished
    JobDir(tmp_path).report_completed(COMPLETED)
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    code = job.wait(timeout=30)
    took = time.monotonic() - started
    guard.close(set())
    assert took < 10, f"the job took {took:.1f}s to end"  # not the 60 s grace of a stop
    assert not (tmp_path / "stop").exists()  # nothing asked the ranks to checkpoint
    assert guard.report(code, None, ["train", "r.yaml"]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "hvdkit: SIGTERM: the run had completed; ending its processes"
    assert lines[-1] == ("hvdkit: SIGTERM came after the run had completed (step 66): nothing "
                         "was lost; last checkpoint /runs/digits/ckpt-66.pt, run files in "
                         "/runs/digits")
    assert "before the ranks wrote a checkpoint" not in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is not guard._handle  # handlers given back


def test_a_run_that_completes_while_stopping_is_reported_complete(tmp_path: Path) -> None:
    guard, out, job = guarded_job(tmp_path, 1)
    os.kill(os.getpid(), signal.SIGINT)  # mid-run: the ranks are asked to stop
    assert (tmp_path / "stop").exists()
    JobDir(tmp_path).report_completed({**COMPLETED, "checkpoint": None})  # finished first
    code = job.wait(timeout=30)
    guard.close(set())
    assert guard.report(code, None, []) == 0
    assert out.getvalue().splitlines()[-1] == (
        "hvdkit: SIGINT came after the run had completed (step 66): nothing was lost; run "
        "files in /runs/digits")
