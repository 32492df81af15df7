"""Harness overhead and the peer comparison, np=2, 1 thread per rank, measured in one run.

- hvdkit steps/s ÷ a hand-written Horovod loop (same model, data, batch; its data set
  resident), both frameworks, the two interleaved every 5 steps inside one job (target ≥ 0.97);
- hvdkit PyTorch samples/s ÷ PyTorch DDP (gloo) samples/s (target ≥ 1.0), one job after the
  other.

    python benchmarks/bench_overhead.py [--segments 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import json_line, versus_hand_written  # noqa: E402


def main(segments: int = 16) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for framework in ("torch", "tensorflow"):
        ratios[f"overhead_{framework}"], samples = versus_hand_written(
            "recipes/synthetic_cnn.yaml", framework, segments)
        if framework == "torch":
            hvdkit_sps = samples
    ddp_sps = json_line([sys.executable, "benchmarks/workers/ddp.py"])["ddp_samples_per_sec"]
    ratios["vs_ddp"] = hvdkit_sps / ddp_sps
    print(f"torch np=2: hvdkit {hvdkit_sps:.0f} samples/s | DDP (gloo) {ddp_sps:.0f} samples/s "
          f"| ratio {ratios['vs_ddp']:.3f} (target >= 1.0; the two jobs one after the other)")
    worst = min(ratios["overhead_torch"], ratios["overhead_tensorflow"])
    print(f"harness overhead ratio (hvdkit / hand-written Horovod, worse framework): {worst:.3f} "
          "(target >= 0.97)")
    return ratios


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=16)
    main(parser.parse_args().segments)
