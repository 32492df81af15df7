"""Stopping a run on SIGINT or SIGTERM: every rank at the same step, with a checkpoint.

In the launcher (`hvdkit train -np N`), `JobGuard` catches both signals. The first asks every
rank to stop (a `stop` file in the job folder, hvdkit.runtime.jobdir) and waits; a second one, or
ranks that have not stopped after `GRACE_S`, end every process of the job at once. Either way
nothing is left behind: no process of the job, no /dev/shm segment it had mapped. The launcher
then exits 130 (SIGINT) or 143 (SIGTERM) with one line saying how to resume.

In each rank, `StepBoundaryStop` holds the stop requests (the signal received directly, as
srun delivers it to every task, or the launcher's stop file) and agrees on them with the other
ranks at the same step, about once a second (`CHECK_EVERY_S`) whatever a step costs: the
requests ride in more columns of the trainer's metrics allreduce (every `train.log_every_steps`
steps and at each epoch's end), and between two flushes a tiny allreduce of their own checks
them every `interval` steps. Each agreement also sums the wall time the ranks took since the
last one, so every rank computes the same next `interval` (1 for a step of a second or more)
from the same integers, and every rank stops after the same step, even with uneven data (a
rank that has joined answers with zeros) or a pipeline (the whole job takes part). The trainer
then ends the loop at the end of that step, as `max_steps` would, writes the checkpoint but
does not evaluate (the resumed run does), and `--resume latest` continues bit for bit.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from typing import Any

import numpy as np

from hvdkit.runtime.jobdir import JobDir

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 60
"""How long the launcher waits for the ranks to reach a step boundary and checkpoint."""
KILL_WAIT_S = 3
CHECK_EVERY_S = 1.0
"""About how often (wall seconds) the ranks agree on stop requests while training."""


def exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StepBoundaryStop:
    """A rank's stop requests and the ranks' agreement on them, about once a second.

    `after_step()` says whether a check is due at this step (the same answer on every rank);
    `payload()` is this rank's part of the check's or the metrics flush's allreduce (SIGINT
    asked, SIGTERM asked, microseconds and steps since the last agreement); `agree(totals)`
    reads the sums, the same on every rank, so every rank stops after the same step and
    schedules the next check at the same step. The first SIGINT/SIGTERM a rank receives asks
    for the stop; a second one runs the handler that was there before (SIGINT:
    KeyboardInterrupt; SIGTERM: the process ends at once).
    """

    WIDTH = 4

    def __init__(self, is_root: bool, every_s: float = CHECK_EVERY_S) -> None:
        self.is_root = is_root
        self.every_s = every_s
        self.job = JobDir.from_env()
        self.received = 0  # a signal this rank received itself
        self.signum = 0  # the signal all ranks agreed to stop for
        self._previous: dict[int, Any] = {}
        self.restart()

    def restart(self) -> None:
        """Check after every step until the ranks know how long one takes (at the start, and
        after an elastic reset: a worker that joins then starts here too)."""
        self.interval = 1  # steps between two agreements
        self.since = 0  # steps since the last agreement
        self._last = time.perf_counter()

    def after_step(self) -> bool:
        """Count a step; True when the ranks check their requests after it."""
        self.since += 1
        return self.since >= self.interval

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
            print(f"hvdkit: {signal_name(signum)}: every rank stops at the end of this step "
                  "and writes a checkpoint (again to stop at once)", file=sys.stderr, flush=True)

    def requests(self) -> np.ndarray:
        """[SIGINT asked, SIGTERM asked] on this rank: a signal, or the launcher's stop file."""
        local = self.signum or self.received or (self.job.stop_requested() if self.job else 0)
        return np.array([local == signal.SIGINT, local == signal.SIGTERM], dtype=np.float64)

    def payload(self) -> np.ndarray:
        """This rank's columns of an agreement: its requests, its whole microseconds and steps
        since the last agreement (whole numbers: their sums are exact, the same on every rank,
        also where ranks with uneven data took different numbers of steps)."""
        waited = round((time.perf_counter() - self._last) * 1e6)
        return np.concatenate([self.requests(), [float(waited), float(self.since)]])

    def agree(self, totals: np.ndarray) -> bool:
        """Read an agreement's sums (`payload` over the ranks): True once any rank asked to
        stop. Sets the steps to the next check from the ranks' mean wall time per step."""
        if not self.signum and totals[1] > 0:
            self.signum = signal.SIGTERM
        elif not self.signum and totals[0] > 0:
            self.signum = signal.SIGINT
        if totals[3] > 0:
            per_step_us = totals[2] / totals[3]
            self.interval = max(1, int(self.every_s * 1e6 // max(per_step_us, 1.0)))
        self.since = 0
        self._last = time.perf_counter()
        return bool(self.signum)


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


