"""Allreduce: Horovod against raw mpi4py at 64 MB, and tensor fusion, np=2, MPI, one run.

- Horovod's in-place allreduce bus bandwidth ÷ mpi4py's in-place `Allreduce` bus bandwidth at
  64 MB, both timed in the same job (target ≥ 0.8);
- 200 tensors of 4 KB, fused (default threshold) ÷ unfused (HOROVOD_FUSION_THRESHOLD=0)
  (target ≤ 0.7).

The full report (sizes 4 B .. 64 MB, latency p50/p90, algbw/busbw, plots) goes to
bench-results/allreduce/.

    python benchmarks/bench_allreduce.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvdkit.bench.allreduce import DEFAULT_SIZES, run_allreduce  # noqa: E402


def main() -> dict[str, float]:
    result = run_allreduce(2, ("mpi",), DEFAULT_SIZES, cycle_times=(),
                           out=ROOT / "bench-results" / "allreduce")
    s = result["summary"]
    for row in result["sizes"]:
        if row["bytes"] == s["largest_bytes"]:
            print(f"  {row['impl']:<8} 64 MB: p50 {row['p50_us'] / 1e3:.1f} ms, "
                  f"busbw {row['busbw_GBps']:.2f} GB/s")
    print(f"fusion: 200 x 4 KB fused {s['fused_200x4096B_ms']:.2f} ms, unfused "
          f"{s['unfused_200x4096B_ms']:.2f} ms; fused/unfused = "
          f"{s['fusion_ratio_fused_over_unfused']:.3f} (target <= 0.7)")
    print(f"busbw horovod/mpi4py at 64 MB, np=2, MPI = "
          f"{s['busbw_ratio_horovod_over_mpi4py']:.3f} (target >= 0.8)")
    return s


if __name__ == "__main__":
    main()
