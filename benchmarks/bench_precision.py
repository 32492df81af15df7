"""Mixed precision on the CPU: resnet_small (width 16) at np=2, 1 thread per rank, PyTorch.

1. hvdkit in bf16 against hvdkit in fp32: samples/s of each and their ratio (this CPU has
   AVX-512 BF16; without it bf16 is emulated and slower).
2. hvdkit in bf16 ÷ a hand-written bf16 autocast Horovod loop with its data resident, the two
   interleaved every 5 steps in one job (benchmarks/workers/overhead.py). Target ≥ 0.97.

    python benchmarks/bench_precision.py [--segments 16] [--frameworks torch,tensorflow]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import versus_hand_written  # noqa: E402

RECIPE = "recipes/resnet_small.yaml"
# precision_force: where the CPU lacks native bf16 (AVX2) it is emulated, and measured so.
OVERRIDES = ["model.width=16", "train.precision_force=true"]


def main(segments: int, frameworks: list[str]) -> float:
    ratios = []
    for framework in frameworks:
        _, fp32 = versus_hand_written(RECIPE, framework, segments, OVERRIDES)
        ratio, bf16 = versus_hand_written(RECIPE, framework, segments,
                                          [*OVERRIDES, "train.precision=bf16"])
        print(f"{framework}: hvdkit fp32 {fp32:.1f} samples/s, bf16 {bf16:.1f} samples/s, "
              f"bf16 ÷ fp32 {bf16 / fp32:.3f}", flush=True)
        ratios.append(ratio)
    worst = min(ratios)
    print("lowest hvdkit bf16 ÷ hand-written bf16 Horovod loop (target >= 0.97):")
    print(f"{worst:.3f}")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--frameworks", default="torch")
    args = parser.parse_args()
    main(args.segments, args.frameworks.split(","))
