"""`hvdkit bench allreduce`: allreduce latency and bandwidth from 4 B to 64 MB, Horovod against
raw mpi4py in the same job, tensor fusion on against off, cycle times, MPI against Gloo.

    hvdkit bench allreduce -np 2 --controller mpi,gloo --cycle-times 1,5 --out bench-allreduce

Each part is a Horovod job of `hvdkit.bench.allreduce_worker`; fusion off and each cycle time
need their own job (Horovod reads HOROVOD_FUSION_THRESHOLD and HOROVOD_CYCLE_TIME at start).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from hvdkit.bench.bandwidth import algbw, busbw, percentiles
from hvdkit.bench.jobs import run_logged, worker_command
from hvdkit.errors import UserError
from hvdkit.launch.options import LaunchOptions

DEFAULT_SIZES = [4 * 16**k for k in range(7)]  # 4 B, 64 B, 1 KB, ... 64 MB
WORKER = "hvdkit.bench.allreduce_worker"


def run_worker_job(options: LaunchOptions, args: list[str], log: Path,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        run_logged(worker_command(options, WORKER, [*args, "--out", str(out)]), log, env)
        return json.loads(out.read_text())


def size_rows(latencies: dict[str, list[float]], impl: str, controller: str,
              n: int) -> list[dict[str, Any]]:
    """One row per size: p50/p90 latency (µs), algbw and busbw (GB/s) from the median time."""
    rows = []
    for size, times in sorted(latencies.items(), key=lambda kv: int(kv[0])):
        nbytes = max(4, int(size))
        p = percentiles(times)
        rows.append({"impl": impl, "controller": controller, "np": n, "bytes": int(size),
                     "p50_us": p["p50"] * 1e6, "p90_us": p["p90"] * 1e6,
                     "algbw_GBps": algbw(nbytes, p["p50"]) / 1e9,
                     "busbw_GBps": busbw(nbytes, p["p50"], n) / 1e9})
    return rows


def run_allreduce(np_: int = 2, controllers: tuple[str, ...] = ("mpi",),
                  sizes: list[int] | None = None, fusion_tensors: int = 200,
                  fusion_bytes: int = 4096, cycle_times: tuple[float, ...] = (),
                  fusion_jobs: int = 3,
                  out: str | Path = "bench-allreduce", write: bool = True) -> dict[str, Any]:
    """Run the parts, print progress, write the report; returns rows and the key ratios."""
    if np_ < 2:
        raise UserError("hvdkit bench allreduce needs -np 2 or more")
    sizes = sizes or DEFAULT_SIZES
    out, logs = Path(out), Path(out) / "logs"
    size_arg = ",".join(map(str, sizes))
    fusion = ["--fusion", str(fusion_tensors), "--fusion-bytes", str(fusion_bytes)]
    mpi = LaunchOptions(np=np_, controller="mpi")
    print(f"[allreduce] MPI: {len(sizes)} sizes, Horovod and mpi4py; fusion on", flush=True)
    main = run_worker_job(mpi, ["--sizes", size_arg, "--raw", *fusion], logs / "mpi.log")
    rows = size_rows(main["horovod"], "horovod", "mpi", np_) + \
        size_rows(main["raw"], "mpi4py", "mpi", np_)
    # Fusion on and off need a job each; alternating jobs keep a drifting load from favouring
    # either. Each job's median counts; the ratio is of the medians over the jobs.
    fused_jobs = [statistics.median(main["fusion"])]
    unfused_jobs = []
    for i in range(fusion_jobs):
        print(f"[allreduce] MPI: fusion off (HOROVOD_FUSION_THRESHOLD=0), job {i + 1}",
              flush=True)
        unfused_jobs.append(statistics.median(run_worker_job(
            mpi, fusion, logs / "unfused.log", {"HOROVOD_FUSION_THRESHOLD": "0"})["fusion"]))
        if i + 1 < fusion_jobs:
            print(f"[allreduce] MPI: fusion on, job {i + 2}", flush=True)
            fused_jobs.append(statistics.median(
                run_worker_job(mpi, fusion, logs / "fused.log")["fusion"]))
    if "gloo" in controllers:
        print("[allreduce] Gloo: sizes", flush=True)
        gloo = run_worker_job(LaunchOptions(np=np_, controller="gloo"),
                              ["--sizes", size_arg], logs / "gloo.log")
        rows += size_rows(gloo["horovod"], "horovod", "gloo", np_)
    cycles = []
    for ms in cycle_times:
        print(f"[allreduce] MPI: HOROVOD_CYCLE_TIME={ms} ms", flush=True)
        part = run_worker_job(mpi, ["--sizes", "4", *fusion], logs / f"cycle-{ms}.log",
                              {"HOROVOD_CYCLE_TIME": str(ms)})
        cycles.append({"cycle_time_ms": ms,
                       "p50_4B_us": percentiles(part["horovod"]["4"])["p50"] * 1e6,
                       "fused_200_ms": statistics.median(part["fusion"]) * 1e3})
    largest = max(sizes)
    hvd_bw = next(r["busbw_GBps"] for r in rows if r["impl"] == "horovod"
                  and r["controller"] == "mpi" and r["bytes"] == largest)
    raw_bw = next(r["busbw_GBps"] for r in rows if r["impl"] == "mpi4py" and r["bytes"] == largest)
    fused, plain = statistics.median(fused_jobs), statistics.median(unfused_jobs)
    summary = {"np": np_, "largest_bytes": largest,
               "busbw_ratio_horovod_over_mpi4py": hvd_bw / raw_bw,
               f"fused_{fusion_tensors}x{fusion_bytes}B_ms": fused * 1e3,
               f"unfused_{fusion_tensors}x{fusion_bytes}B_ms": plain * 1e3,
               "fusion_ratio_fused_over_unfused": fused / plain}
    gloo_bw = [r["busbw_GBps"] for r in rows if r["controller"] == "gloo"
               and r["bytes"] == largest]
    if gloo_bw:
        summary["busbw_ratio_gloo_over_mpi"] = gloo_bw[0] / hvd_bw
    result = {"sizes": rows, "cycle_times": cycles, "summary": summary}
    if write:
        from hvdkit.bench.report import write_allreduce_report

        write_allreduce_report(result, out)
    return result
