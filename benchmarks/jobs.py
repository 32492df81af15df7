"""What the benchmarks share: run a command (a Horovod job, or one process) from the project root
and take the JSON line its worker printed; hvdkit beside a hand-written Horovod loop."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from hvdkit.launch.job import horovodrun_command
from hvdkit.launch.options import LaunchOptions

ROOT = Path(__file__).resolve().parents[1]


def json_line(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `command` (with `env` added to the environment) and return the first JSON object
    its output holds (rank 0's line)."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ, **(env or {})}
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        start, end = line.find("{"), line.rfind("}")  # mpirun's tags may surround the JSON
        if 0 <= start < end:
            return json.loads(line[start : end + 1])
    raise RuntimeError(f"no result from {' '.join(command)}:\n{out.stdout[-3000:]}"
                       f"{out.stderr[-3000:]}")


def versus_hand_written(recipe: str, framework: str, segments: int,
                        overrides: list[str] | tuple[str, ...] = ()) -> tuple[float, float]:
    """hvdkit ÷ a hand-written Horovod loop on `recipe` (np=2, 1 thread per rank; the two
    interleave every 5 steps in one job: benchmarks/workers/overhead.py): the median over
    segments of hvdkit's rate ÷ that of the hand-written segments around it, and hvdkit's
    median samples/s over both ranks. Prints a line."""
    worker = [sys.executable, "benchmarks/workers/overhead.py", "--framework", framework,
              "--recipe", recipe, "--segments", str(segments)]
    for item in overrides:
        worker += ["--set", item]
    result = json_line(horovodrun_command(LaunchOptions(np=2), worker))
    raw, ours = result["raw_steps_per_sec"], result["hvdkit_steps_per_sec"]
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    ratio = statistics.median(ratios)
    print(f"{Path(recipe).stem:<13} {framework:<10} hand-written {statistics.median(raw):6.2f} "
          f"steps/s | hvdkit {statistics.median(ours):6.2f} steps/s | ratio {ratio:.3f} "
          f"(quartiles {' '.join(f'{q:.3f}' for q in statistics.quantiles(ratios, n=4))}, "
          f"{len(ratios)} segments)", flush=True)
    return ratio, statistics.median(ours) * result["batch_per_rank"] * 2
