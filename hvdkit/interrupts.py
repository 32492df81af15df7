"""Stopping a run on SIGINT or SIGTERM: every rank at the same step, with a checkpoint.

In the launcher (`hvdkit train -np N`), `JobGuard` catches both signals. The first asks every
rank to stop (a `stop` file in the job folder, hvdkit.jobdir) and waits; a second one, or
ranks that have not stopped after `GRACE_S`, end every process of the job at once. Either way
nothing is left behind: no process of the job, no /dev/shm segment it had mapped. The launcher
then exits 130 (SIGINT) or 143 (SIGTERM) with one line saying how to resume.

In each rank, `StepBoundaryStop` holds the stop requests (the signal received directly, as
srun delivers it to every task, or the launcher's stop file). They ride in two more columns of
the trainer's metrics allreduce (every `train.log_every_steps` steps and at each epoch's end),
so no collective is added and every rank sees the same answer after the same flush, even with
uneven data. The trainer then ends the loop there as `max_steps` would (final evaluation and
checkpoint), and `--resume latest` continues bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hvdkit.checkpoint import checkpoint_path
from hvdkit.jobdir import JobDir

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 60
"""How long the launcher waits for the ranks to reach a step boundary and checkpoint."""
KILL_WAIT_S = 3


def exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


# -- in each rank -------------------------------------------------------------------------


class StepBoundaryStop:
    """A rank's stop requests and the ranks' agreement on them.

    `requests()` is this rank's part of the trainer's metrics allreduce (two columns: SIGINT,
    SIGTERM); `agree(totals)` reads the sums, the same on every rank, so every rank stops after
    the same flush. The first SIGINT/SIGTERM a rank receives asks for the stop; a second one
    runs the handler that was there before (SIGINT: KeyboardInterrupt; SIGTERM: the process
    ends at once).
    """

    def __init__(self, is_root: bool) -> None:
        self.is_root = is_root
        self.job = JobDir.from_env()
        self.received = 0  # a signal this rank received itself
        self.signum = 0  # the signal all ranks agreed to stop for
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; the launcher's stop file still works
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # the second signal: stop at once, as if we had not caught it
            previous = self._previous.get(signum, signal.SIG_DFL)
            self.restore()
            print(f"hvdkit: second {signal_name(signum)}: stopping at once, without a "
                  "checkpoint", file=sys.stderr, flush=True)
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        self.received = signum
        if self.is_root:
            print(f"hvdkit: {signal_name(signum)}: every rank stops at the next logged step "
                  "and writes a checkpoint (again to stop at once)", file=sys.stderr, flush=True)

    def requests(self) -> np.ndarray:
        """[SIGINT asked, SIGTERM asked] on this rank: a signal, or the launcher's stop file."""
        local = self.signum or self.received or (self.job.stop_requested() if self.job else 0)
        return np.array([local == signal.SIGINT, local == signal.SIGTERM], dtype=np.float64)

    def agree(self, totals: np.ndarray) -> bool:
        """True once any rank asked to stop (`totals`: the requests summed over the ranks)."""
        if not self.signum and totals[1] > 0:
            self.signum = signal.SIGTERM
        elif not self.signum and totals[0] > 0:
            self.signum = signal.SIGINT
        return bool(self.signum)


def finish_stopped(trainer: Any) -> int:
    """After `trainer.fit()` stopped on a signal: rank 0 tells the launcher where it stopped,
    or says it itself when there is no hvdkit launcher. The exit code: 0 in a job whose
    launcher reports the stop (horovodrun then stays quiet), else 130 or 143."""
    checkpointer, step = trainer.checkpointer, trainer.position.step
    saved = checkpointer.directory is not None and checkpointer.last_saved == step
    record = {"signal": trainer.stop.signum, "step": step,
              "run_dir": str(trainer.run_dir) if trainer.run_dir else None,
              "checkpoint": str(checkpoint_path(checkpointer.directory, step)) if saved else None}
    job, is_root = JobDir.from_env(), trainer.world.is_root
    if job is not None:
        if is_root:
            job.report_stopped(record)
        return 0
    if is_root:
        print(stopped_line(record, sys.argv[1:]), file=sys.stderr, flush=True)
    return exit_code(record["signal"])


def stopped_line(record: dict[str, Any], argv: list[str]) -> str:
    """One line: where the run stopped, and the command that resumes it."""
    head = f"hvdkit: stopped by {signal_name(record['signal'])} after step {record['step']}"
    if not record.get("checkpoint"):
        return f"{head}; no checkpoint was written (the run has no run folder)"
    return (f"{head}; checkpoint {record['checkpoint']}; resume with: "
            f"{resume_command(argv, record['run_dir'])}")


def resume_command(argv: list[str], run_dir: str) -> str:
    """`argv` (the user's `hvdkit train ...` arguments) with `--run-dir RUN --resume latest`."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--run-dir", "--resume", "--overwrite"):
            takes_value = "=" not in arg and name != "--overwrite" and i + 1 < len(argv) \
                and not argv[i + 1].startswith("-")
            skip = takes_value
            continue
        kept.append(arg)
    return shlex.join(["hvdkit", *kept, "--run-dir", run_dir, "--resume", "latest"])


# -- in the launcher ----------------------------------------------------------------------


class JobGuard:
    """The launcher's signal handling and clean-up for one horovodrun process.

    horovodrun runs in its own session (`start_new_session=True`), so a terminal's Ctrl-C
    reaches the launcher alone, which then stops the job in order rather than each process
    dying where it stands.
    """

    def __init__(self, job: JobDir, out: Any = None) -> None:
        self.job = job
        self.out = out or sys.stderr
        self.signum = 0
        self.ended: str | None = None  # why the job was ended at once, when it was
        self.process: subprocess.Popen | None = None
        self.extra_pids: Callable[[], list[int]] = list
        self._known: dict[int, Any] = {}  # every process of the job seen so far
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def attach(self, process: subprocess.Popen, extra_pids: Callable[[], list[int]]) -> None:
        """Watch `process` (horovodrun); `extra_pids` names the ranks' own pids (heartbeats)."""
        self.process, self.extra_pids = process, extra_pids
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        threading.Thread(target=self._watch, name="hvdkit-guard", daemon=True).start()

    def _watch(self) -> None:
        """Note the job's processes every 2 s: after horovodrun is gone, its orphans are not
        its children any more, and `close` must still find them."""
        while self.process is not None and self.process.poll() is None:
            self.processes()
            time.sleep(2)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            self._say(f"hvdkit: {signal_name(signum)} again: ending every process of the job "
                      "now, without a checkpoint")
            threading.Thread(target=self.end, args=(f"a second {signal_name(signum)}",),
                             daemon=True).start()
            return
        self.signum = signum
        self.job.request_stop(signum)
        self._say(f"hvdkit: {signal_name(signum)}: every rank stops at its next step boundary "
                  f"and writes a checkpoint (up to {GRACE_S}s); Ctrl-C again to stop at once")
        self._timer = threading.Timer(GRACE_S, self.end,
                                      args=(f"the ranks did not stop within {GRACE_S}s",))
        self._timer.daemon = True
        self._timer.start()

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def processes(self) -> list[Any]:
        """horovodrun, everything below it (mpirun, middlemen, ranks) and the ranks it lost."""
        import psutil

        found = []
        if self.process is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.process.pid)
                found = [root, *root.children(recursive=True)]
        for pid in self.extra_pids():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)  # a rank's pid: ours only if it has our job folder
                if proc.environ().get("HVDKIT_JOB_DIR") == str(self.job.path):
                    found.append(proc)
        for proc in found:
            self._known.setdefault(proc.pid, proc)
        return [p for p in list(self._known.values()) if _alive(p)]

    def end(self, reason: str) -> None:
        """End every process of the job now: the ranks by SIGKILL (a frozen one too), the
        launchers above them (horovodrun, mpirun) by SIGTERM so they clean up, then SIGKILL."""
        import psutil

        with self._lock:
            if self.ended:
                return
            self.ended = reason
        procs = self.processes()
        ranks = [p for p in procs if _is_rank(p)]
        for proc in [*ranks, *(p for p in procs if p not in ranks)]:  # ranks first: no rank
            with contextlib.suppress(psutil.Error):  # then sees mpirun forward the SIGTERM
                proc.kill() if proc in ranks else proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=KILL_WAIT_S)
        for proc in [*alive, *self.processes()]:
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def close(self, shm_files: set[str]) -> None:
        """After horovodrun has exited: restore the signal handlers, end any process of the
        job still running, delete the /dev/shm segments the ranks had mapped."""
        if self._timer is not None:
            self._timer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.processes():
            time.sleep(0.5)  # ranks finishing their exit after horovodrun returned
            if self.processes():
                self.ended = self.ended or "processes left after horovodrun exited"
                self._kill_left()
        for name in shm_files:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def _kill_left(self) -> None:
        import psutil

        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(self.processes(), timeout=KILL_WAIT_S)

    def report(self, code: int, record: dict[str, Any] | None, argv: list[str]) -> int:
        """After an interrupted job: the stop line (`record`: rank 0's), and 130 or 143."""
        if record is None and code == 0 and not self.ended:
            self._say(f"hvdkit: {signal_name(self.signum)} came as the run finished: it is "
                      "complete")
            return 0
        if record is not None:
            self._say(stopped_line(record, argv))
        else:
            why = f" ({self.ended})" if self.ended else ""
            self._say(f"hvdkit: stopped by {signal_name(self.signum)} before the ranks wrote "
                      f"a checkpoint{why}; `--resume latest` continues from the newest one, "
                      "if any")
        return exit_code(self.signum)


def _is_rank(proc: Any) -> bool:
    """A rank's process (not a launcher above it): it has its rank in its environment."""
    import psutil

    from hvdkit.worker import RANK_VARIABLES

    try:
        return any(name in proc.environ() for name in RANK_VARIABLES)
    except psutil.Error:
        return False


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
