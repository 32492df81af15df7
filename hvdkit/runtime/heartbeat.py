"""A rank's heartbeat: a small thread rewriting its file in the job folder every `INTERVAL_S`.

Every rank of a job started by `hvdkit train` beats (host, pid, step, and on exit how it
ended), even while it waits in a collective, so a silent rank is one whose whole process
stopped (frozen or killed), not one waiting for a peer. The launcher's monitor
(hvdkit.launch.monitor) reads the files.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from hvdkit.runtime.jobdir import JobDir, write_json

INTERVAL_S = 0.5
SHM = "/dev/shm/"

# How a rank ended (`exit_kind`), as hvdkit.runtime.rank.run_worker saw it.
OK, ERROR, FAILED, CONSEQUENCE, INTERRUPTED = "ok", "error", "failed", "consequence", "stopped"


def host_name() -> str:
    """The host as the launcher named it (horovodrun's -H entry), else this machine's name."""
    return os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()


def shm_mappings(pid: int | str = "self") -> list[str]:
    """The /dev/shm files a process has mapped (OpenMPI's shared-memory segments)."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split(None, 5)[5] for line in lines
                   if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith(SHM)})




class Heartbeat:
    """A daemon thread rewriting this rank's heartbeat file every INTERVAL_S seconds."""

    def __init__(self, job: JobDir, rank: int) -> None:
        self.path = job.heartbeat_path(rank)
        self.record: dict[str, Any] = {"rank": rank, "host": host_name(), "pid": os.getpid(),
                                       "beat": 0, "step": None, "time": time.time(),
                                       "shm": [], "exit": None, "exit_kind": None}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvdkit-heartbeat", daemon=True)

    def start(self) -> None:
        self._write()
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(INTERVAL_S):
            self._write()

    def _write(self) -> None:
        record = self.record
        record["beat"] += 1
        record["time"] = time.time()
        if record["beat"] % 4 == 2:  # every 2 s: the shared-memory segments it maps
            record["shm"] = sorted(set(record["shm"]) | set(shm_mappings()))
        write_json(self.path, record)

    def finish(self, code: int, kind: str, error: str | None = None) -> None:
        self._done.set()
        self._thread.join(timeout=2)
        self.record.update(exit=code, exit_kind=kind, exit_time=time.time(), error=error)
        self._write()


_heartbeat: Heartbeat | None = None


def start_heartbeat(rank: int) -> None:
    """Start this rank's heartbeat when its launcher made a job folder (hvdkit train)."""
    global _heartbeat
    job = JobDir.from_env()
    if job is not None and _heartbeat is None:
        _heartbeat = Heartbeat(job, rank)
        _heartbeat.start()


def report_step(step: int) -> None:
    """The trainer's step hook: the step this rank has finished, carried by the next beat."""
    if _heartbeat is not None:
        _heartbeat.record["step"] = step


def finish_heartbeat(code: int, kind: str, error: str | None = None) -> None:
    """The last beat: how this rank ended (`kind`: ok, error, failed, consequence, stopped;
    `error`: a UserError's message)."""
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.finish(code, kind, error)
        _heartbeat = None
