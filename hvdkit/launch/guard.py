"""The launcher's side of a stop (SIGINT, SIGTERM): ask every rank to stop at a step boundary,
then end the job in order; see hvdkit.runtime.stop for the ranks' side.

A stop that comes after the run completed (rank 0 wrote `completed.json` in the job folder:
its last checkpoint and run folder are written, the ranks were only exiting) ends the job's
processes at once, says where the run's files are, and exits 0: nothing was lost, and a script
that runs `hvdkit train && hvdkit export` goes on as after any complete run. The same holds
when the run completes while the ranks are being stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hvdkit.runtime.jobdir import JobDir
from hvdkit.runtime.stop import GRACE_S, KILL_WAIT_S, SIGNALS, exit_code, signal_name, stopped_line


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
        self.completed: dict[str, Any] | None = None  # rank 0's record of the completed run
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
        if self.signum and self.completed:
            return  # already ending the completed run's processes
        if self.signum:
            self._say(f"hvdkit: {signal_name(signum)} again: ending every process of the job "
                      "now, without a checkpoint")
            threading.Thread(target=self.end, args=(f"a second {signal_name(signum)}",),
                             daemon=True).start()
            return
        self.signum = signum
        self.completed = self.job.completed()
        if self.completed:  # nothing left to save: the ranks were only exiting
            self._say(f"hvdkit: {signal_name(signum)}: the run had completed; ending its "
                      "processes")
            threading.Thread(target=self.end, args=("the run had completed",),
                             daemon=True).start()
            return
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
        if self.signum and not self.completed:  # it may have completed while stopping
            self.completed = self.job.completed()
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
        """After an interrupted job: the stop line (`record`: rank 0's), and 130 or 143; after
        a job whose run had completed before the signal (or while the ranks stopped), where
        its files are, and 0: its work is done and saved, only its processes' exit was cut."""
        if record is None and self.completed:
            self._say(completed_line(self.signum, self.completed))
            return 0
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


def completed_line(signum: int, record: dict[str, Any]) -> str:
    """One line: the run had completed before `signum` came, and where its files are."""
    where = f"run files in {record['run_dir']}" if record.get("run_dir") else "no run folder"
    if record.get("checkpoint"):
        where = f"last checkpoint {record['checkpoint']}, {where}"
    return (f"hvdkit: {signal_name(signum)} came after the run had completed (step "
            f"{record['step']}): nothing was lost; {where}")


def _is_rank(proc: Any) -> bool:
    """A rank's process (not a launcher above it): it has its rank in its environment."""
    import psutil

    from hvdkit.runtime.rank import RANK_VARIABLES

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
