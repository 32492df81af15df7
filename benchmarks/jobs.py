"""What the benchmarks share: run a command (a Horovod job, or one process) from the project root
and take the JSON line its worker printed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def json_line(command: list[str]) -> dict:
    """Run `command` and return the first JSON object its output holds (rank 0's line)."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        start, end = line.find("{"), line.rfind("}")  # mpirun's tags may surround the JSON
        if 0 <= start < end:
            return json.loads(line[start : end + 1])
    raise RuntimeError(f"no result from {' '.join(command)}:\n{out.stdout[-3000:]}"
                       f"{out.stderr[-3000:]}")
