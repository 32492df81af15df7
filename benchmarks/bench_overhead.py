"""Harness overhead and the peer comparison, np=2, 1 thread per rank, measured in one run.

- hvdkit steps/s ÷ a hand-written Horovod loop (same model, data, batch), both frameworks,
  alternating inside one job (target ≥ 0.97);
- hvdkit PyTorch samples/s ÷ PyTorch DDP (gloo) samples/s (target ≥ 1.0), jobs alternating.

    python benchmarks/bench_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import json_line  # noqa: E402
from hvdkit.launcher import LaunchOptions, horovodrun_command  # noqa: E402


def hvdkit_job(framework: str, rounds: int) -> dict:
    worker = [sys.executable, "benchmarks/workers/overhead.py", "--framework", framework,
              "--rounds", str(rounds)]
    return json_line(horovodrun_command(LaunchOptions(np=2), worker))


def main(rounds: int = 3) -> dict[str, float]:
    ratios: dict[str, float] = {}
    torch_rates: list[float] = []
    ddp_rates: list[float] = []
    for framework in ("torch", "tensorflow"):
        result = hvdkit_job(framework, rounds)
        raw = statistics.median(result["raw_steps_per_sec"])
        ours = statistics.median(result["hvdkit_steps_per_sec"])
        ratios[f"overhead_{framework}"] = ours / raw
        print(f"{framework:<10} raw Horovod loop {raw:7.2f} steps/s | hvdkit {ours:7.2f} steps/s "
              f"| ratio {ours / raw:.3f}  (all rounds: raw {result['raw_steps_per_sec']}, "
              f"hvdkit {result['hvdkit_steps_per_sec']})", flush=True)
        if framework == "torch":
            torch_rates.append(ours * result["batch_per_rank"] * 2)
            ddp_rates.append(json_line([sys.executable, "benchmarks/workers/ddp.py"])
                             ["ddp_samples_per_sec"])
    hvdkit_sps, ddp_sps = statistics.median(torch_rates), statistics.median(ddp_rates)
    ratios["vs_ddp"] = hvdkit_sps / ddp_sps
    print(f"torch np=2: hvdkit {hvdkit_sps:.0f} samples/s | DDP (gloo) {ddp_sps:.0f} samples/s "
          f"| ratio {ratios['vs_ddp']:.3f} (target >= 1.0)")
    worst = min(ratios["overhead_torch"], ratios["overhead_tensorflow"])
    print(f"harness overhead ratio (hvdkit / hand-written Horovod, worse framework): {worst:.3f} "
          "(target >= 0.97)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args().rounds)
