"""Launch cost: `hvdkit train -np 2` against the same job through `launch/mpirun.sh`, both
frameworks, run back to back in alternation; median wall time of each over the rounds, and how
long each command took to return after the job's last line. Target: hvdkit ≤ mpirun.sh + 1.5 s.

    python benchmarks/bench_launch.py [--rounds 3] [--steps 10] [--before /path/to/old/checkout]

`--before` adds a third command, `hvdkit train` from another checkout of hvdkit (e.g. an older
commit, in a `git worktree`), run with the same Python: the before/after of a launcher change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/digits_mlp.yaml"
TARGET_S = 1.5


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds of `command`, and seconds from its last output line to its exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    last, tail = started, []
    for line in proc.stdout:
        last = time.perf_counter()
        tail = [*tail[-20:], line]
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{''.join(tail)}")
    ended = time.perf_counter()
    return ended - started, ended - last


def commands(framework: str, steps: int, run_dir: str, before: str | None
             ) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    job = [RECIPE, "-f", framework, "--set", f"train.max_steps={steps}", "--no-progress",
           "--run-dir", run_dir]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HVDKIT_NO_MACHINE_DEFAULTS": "1"}
    out = {
        "hvdkit": ([sys.executable, "-m", "hvdkit", "train", *job, "-np", "2"], env, ROOT),
        "mpirun.sh": (["bash", "launch/mpirun.sh", *job], {**env, "NP": "2"}, ROOT),
    }
    if before:  # run from there: `python -m` puts the working folder first on sys.path
        out["before"] = ([sys.executable, "-m", "hvdkit", "train", *job, "-np", "2"],
                         {**env, "PYTHONPATH": before}, Path(before))
    return out


def main(rounds: int, steps: int, before: str | None) -> dict[str, float]:
    gaps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for framework in ("torch", "tensorflow"):
            jobs = commands(framework, steps, tmp, before)
            walls: dict[str, list[float]] = {name: [] for name in jobs}
            tails: dict[str, list[float]] = {name: [] for name in jobs}
            for _ in range(rounds):
                for name, (command, env, cwd) in jobs.items():  # alternating: drifts hit all
                    wall, tail = timed(command, env, cwd)
                    walls[name].append(wall)
                    tails[name].append(tail)
            medians = {name: statistics.median(values) for name, values in walls.items()}
            for name in jobs:
                print(f"{framework:<10} {name:<10} median {medians[name]:5.2f} s  "
                      f"(runs {', '.join(f'{w:.2f}' for w in walls[name])}; returned "
                      f"{statistics.median(tails[name]):.2f} s after the last line)", flush=True)
            gaps[framework] = medians["hvdkit"] - medians["mpirun.sh"]
            gaps[f"{framework}_ratio"] = medians["hvdkit"] / medians["mpirun.sh"]
    print(f"hvdkit train -np 2 minus launch/mpirun.sh: torch {gaps['torch']:+.2f} s, tensorflow "
          f"{gaps['tensorflow']:+.2f} s (target <= +{TARGET_S} s); ratio torch "
          f"{gaps['torch_ratio']:.2f}, tensorflow {gaps['tensorflow_ratio']:.2f}")
    return gaps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--before", help="another hvdkit checkout to time as well")
    args = parser.parse_args()
    main(args.rounds, args.steps, args.before)
