"""The watchdog's monitor: the launcher reads the ranks' heartbeats (hvdkit.runtime.heartbeat).

Horovod's own stall inspector runs in its coordinator, which cannot act while it waits inside
MPI, so a rank frozen under MPI (SIGSTOP, a hung driver, a swapped-out host) hung a job for
good. Here every rank of a job started by `hvdkit train` runs a small thread that rewrites its
heartbeat file (hvdkit.runtime.jobdir) every `INTERVAL_S`: host, pid, step, and on exit how
it ended.
A thread beats even while the rank waits in a collective, so a silent rank is one whose whole
process stopped (frozen or killed), not one waiting for a peer.

The launcher's `Monitor` reads the files: a rank silent for `--stall-warning-seconds` is named
with its host; past `--stall-shutdown-seconds` the job is ended, naming the silent rank(s).
After a failed job, `Monitor.first_failure()` says which rank failed first (the first to exit
with an error or to go silent), so the launcher's message blames the right one.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from hvdkit.runtime.heartbeat import CONSEQUENCE, INTERVAL_S, host_name
from hvdkit.runtime.jobdir import JobDir

HOROVOD_DEFAULT_WARNING_S = 60


@dataclass
class RankState:
    """What the launcher knows of one rank from its heartbeats."""

    rank: int
    host: str
    pid: int
    step: int | None
    beat: int
    last_beat: float  # the rank's clock: when it last beat
    heard: float  # the launcher's monotonic clock: when the beat counter last changed
    exit: int | None = None
    exit_kind: str | None = None
    exit_time: float | None = None
    error: str | None = None
    warned: bool = False

    def describe(self) -> str:
        return f"rank {self.rank} (pid {self.pid} on {self.host})"

    def step_text(self) -> str:
        """Where its last heartbeat found it (a beat is up to INTERVAL_S old)."""
        return ("last heard before its first step" if self.step is None
                else f"last heard after step {self.step}")


class Monitor:
    """Reads the ranks' heartbeats every INTERVAL_S; warns about and ends on silent ranks.

    `warn_s` None: Horovod's default (60 s); 0: never. `shutdown_s` None or 0: never.
    `end_job(reason)` is called once when a rank has been silent for `shutdown_s`.
    """

    def __init__(self, job: JobDir, warn_s: float | None, shutdown_s: float | None,
                 end_job: Callable[[str], None], out: TextIO | None = None) -> None:
        self.job = job
        self.warn_s = HOROVOD_DEFAULT_WARNING_S if warn_s is None else warn_s
        self.shutdown_s = shutdown_s or 0
        self.end_job = end_job
        self.out = out or sys.stderr
        self.ranks: dict[int, RankState] = {}
        self.shm: set[str] = set()
        self.silenced: list[RankState] = []  # the ranks whose silence ended the job
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvdkit-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.poll()  # the last exit records

    def _run(self) -> None:
        while not self._done.wait(INTERVAL_S):
            self.poll()

    def poll(self, now: float | None = None) -> None:
        """Read every heartbeat once; warn or end the job for ranks silent too long."""
        now = time.monotonic() if now is None else now
        for rank, data in self.job.heartbeats().items():
            self._update(rank, data, now)
        if self.silenced or self._done.is_set():
            return
        silent = [s for s in self.ranks.values() if s.exit is None]
        for state in silent:
            quiet = now - state.heard
            if self.warn_s and quiet >= self.warn_s and not state.warned:
                state.warned = True
                ends = (f"; the job ends after {self.shutdown_s:g}s of silence "
                        "(--stall-shutdown-seconds)" if self.shutdown_s else "")
                self._say(f"hvdkit: warning: {state.describe()} has sent no heartbeat for "
                          f"{quiet:.0f}s ({state.step_text()}): it is frozen or stopped{ends}")
        late = [s for s in silent if self.shutdown_s and now - s.heard >= self.shutdown_s]
        if late:
            self.silenced = late
            names = ", ".join(s.describe() for s in late)
            reason = (f"{names} silent for {self.shutdown_s:g}s (--stall-shutdown-seconds; "
                      f"{late[0].step_text()})")
            self._say(f"hvdkit: ending the job: {reason}")
            self.end_job(reason)

    def _update(self, rank: int, data: dict[str, Any], now: float) -> None:
        state = self.ranks.get(rank)
        if state is None or data["beat"] != state.beat:
            if state is not None and state.warned and not self.silenced \
                    and data.get("exit") is None:
                self._say(f"hvdkit: {state.describe()} is beating again")
            self.ranks[rank] = state = RankState(
                rank, data["host"], data["pid"], data["step"], data["beat"], data["time"], now)
        state.exit, state.exit_kind = data.get("exit"), data.get("exit_kind")
        state.exit_time, state.error = data.get("exit_time"), data.get("error")
        self.shm.update(data.get("shm") or [])

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # -- after the job ----------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The ranks' processes on this host (to end a job whose launcher lost them)."""
        here = {host_name(), "localhost", "127.0.0.1", socket.gethostname()}
        return [s.pid for s in list(self.ranks.values()) if s.host in here]  # another thread

    def first_failure(self, reported_lost: set[int] = frozenset()) -> RankState | None:
        """The rank that failed first: the first to exit with an error or to go silent (a rank
        that vanished, killed or frozen, stopped at most 2 beats after its last one); a rank
        the watchdog saw go silent, or that the launcher reported lost (`reported_lost`, e.g.
        mpirun's "exited on signal"), before the others. A rank whose collective failed only
        because a peer was gone comes last."""
        if self.silenced:
            return self.silenced[0]

        def key(s: RankState) -> tuple[int, float]:
            if s.exit is None:  # vanished: killed, crashed in native code, or frozen
                seen = s.warned or s.rank in reported_lost
                return (0 if s.warned else 1), s.last_beat + 2 * INTERVAL_S - (1 if seen else 0)
            return (2 if s.exit_kind == CONSEQUENCE else 1), s.exit_time or s.last_beat

        failed = [s for s in self.ranks.values() if s.exit != 0]
        return min(failed, key=key) if failed else None
