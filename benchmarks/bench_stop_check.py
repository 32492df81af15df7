"""The cost of stopping at a step boundary: hvdkit's stop check (a stop-file read and more
columns in each metrics allreduce, a tiny allreduce about once a second) and the heartbeat's
step hook, np=2 torch, with and without, alternating inside one job (target ≥ 0.99). A third
variant checks after every step, as a step of a second or more does: its extra time per step
is the cost of one check, to set against that step.

    python benchmarks/bench_stop_check.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvdkit.launch.job import horovodrun_command  # noqa: E402
from hvdkit.launch.options import LaunchOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    worker = [sys.executable, "benchmarks/workers/stop_check.py", "--rounds", str(args.rounds)]
    out = subprocess.run(horovodrun_command(LaunchOptions(np=2), worker), cwd=ROOT,
                         capture_output=True, text=True)
    line = next(line for line in out.stdout.splitlines() if '"with"' in line)
    result = json.loads(line[line.find("{"): line.rfind("}") + 1])
    step_ms = {k: 1e3 * result["global_batch"] / result[k]
               for k in ("with", "every_step", "without")}
    print(f"samples/s with the stop check {result['with']:.0f}, checking every step "
          f"{result['every_step']:.0f}, without {result['without']:.0f} (medians of "
          f"{args.rounds} alternating rounds)")
    print(f"one check costs {step_ms['every_step'] - step_ms['without']:.2f} ms "
          f"(a step: {step_ms['without']:.2f} ms without)")
    print(f"stop check: samples/s with ÷ without = {result['with'] / result['without']:.3f}")


if __name__ == "__main__":
    main()
