"""The per-job control folder shared by the launcher and its ranks (HVDKIT_JOB_DIR).

`hvdkit train` creates it before starting horovodrun and removes it when the job is over. It
holds small files, each written atomically (temporary file, then rename):

- `rank-<N>.json`: rank N's heartbeat (hvdkit.launch.monitor): host, pid, step, beat counter, exit;
- `stop`: the launcher asks every rank to stop at the next step boundary (hvdkit.launch.guard);
- `stopped.json`: rank 0 says where it stopped and which checkpoint it wrote;
- `completed.json`: rank 0 says the run completed, its run folder and last checkpoint (a stop
  that comes after it has nothing left to save).

Ranks on another host see the folder only where it is on a shared file system; without it they
simply write nothing, and the launcher judges only the ranks it hears from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

ENV = "HVDKIT_JOB_DIR"


class JobDir:
    """One job's control folder; `JobDir.from_env()` inside a rank, `JobDir.create()` outside."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls) -> JobDir:
        return cls(tempfile.mkdtemp(prefix="hvdkit-job-"))

    @classmethod
    def from_env(cls) -> JobDir | None:
        """The folder of the job this process runs in, when its launcher made one we can see."""
        value = os.environ.get(ENV)
        return cls(value) if value and Path(value).is_dir() else None

    def env(self) -> dict[str, str]:
        return {ENV: str(self.path)}

    def heartbeat_path(self, rank: int) -> Path:
        return self.path / f"rank-{rank}.json"

    def heartbeats(self) -> dict[int, dict[str, Any]]:
        """Every rank's latest heartbeat, by rank."""
        beats = {}
        for path in self.path.glob("rank-*.json"):
            data = read_json(path)
            if data is not None:
                beats[int(data["rank"])] = data
        return beats

    # -- stopping at a step boundary (hvdkit.launch.guard) ----------------------------------

    def request_stop(self, signum: int) -> None:
        write_json(self.path / "stop", {"signal": signum})

    def stop_requested(self) -> int:
        """The signal number the launcher asked the ranks to stop for; 0 when none."""
        data = read_json(self.path / "stop")
        return int(data["signal"]) if data else 0

    def report_stopped(self, record: dict[str, Any]) -> None:
        write_json(self.path / "stopped.json", record)

    def stopped(self) -> dict[str, Any] | None:
        return read_json(self.path / "stopped.json")

    def report_completed(self, record: dict[str, Any]) -> None:
        write_json(self.path / "completed.json", record)

    def completed(self) -> dict[str, Any] | None:
        """Rank 0's record of the completed run (run_dir, step, checkpoint); None before."""
        return read_json(self.path / "completed.json")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically, so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    except OSError:  # the folder is gone (the job is being cleaned up): nothing to report to
        temp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
