"""Running one study trial as a child process (`hvdkit train`, or a microbenchmark worker),
its output kept in a log file so that a long sweep shows only one progress line per trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hvdkit.errors import UserError
from hvdkit.launch.job import job_command
from hvdkit.launch.options import LaunchOptions


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None,
               timeout: float | None = None) -> None:
    """Run `command`, appending its output to `log`; a failure names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **(env or {})}
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        try:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise UserError(f"trial timed out after {timeout:.0f} s; see {log}") from None
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise UserError(f"trial failed (exit code {code}); see {log}:\n{tail}")


def worker_command(options: LaunchOptions, module: str, args: list[str]) -> list[str]:
    """`python -m module args` on every rank (directly, as an MPI singleton, for one rank)."""
    program = [sys.executable, "-m", module, *args]
    if options.np == 1 and not options.multi_host:
        return program
    return job_command(options, program)
