"""Pipeline benchmark: measured bubble vs (p−1)/(m+p−1), and pipeline speed-up vs its ideal.

A balanced 2-stage MLP (512 → 4 × 512 → 10; the cut gives each stage ~0.53 M parameters) on
PyTorch, 1 thread per rank, batch 1024 per step. One 2-rank job runs 1F1B for m in 1, 2, 4, 8;
one process runs the whole model with hvdkit's plain adapter. Prints the bubble per m, then
(pipeline samples/s at m=8 ÷ single-process samples/s) ÷ 2·(1 − (p−1)/(m+p−1)), last.

    python benchmarks/bench_pipeline.py            # launches its jobs; about a minute
    HVDKIT_BENCH_WIDTH=1024 python benchmarks/bench_pipeline.py     # a wider model

Each line also shows busy ÷ CPU time per stage: near 1 when each rank has its core; above 1
when other processes share the cores, and then the figures measure that sharing, not the
schedule (2 ranks need 2 free cores; the single process needs 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvdkit.launcher import LaunchOptions, horovodrun_command  # noqa: E402
from hvdkit.recipe import recipe_from_dict  # noqa: E402

STAGES = 2
MICROBATCHES = (1, 2, 4, 8)
# Micro-batches of 128 rows at m=8: smaller ones make each stage's weight-gradient GEMMs
# memory-bound on a CPU (their output is weight-sized whatever the rows), so the stages' work
# itself grows with m, which is not the bubble.
BATCH, WARMUP, STEPS = 1024, 2, 12
WIDTH = int(os.environ.get("HVDKIT_BENCH_WIDTH", "512"))


def recipe(stages: int, microbatches: int):
    return recipe_from_dict({
        "name": "bench-pipeline",
        "model": {"name": "mlp", "hidden": [WIDTH] * 4},
        "data": {"name": "synthetic", "shape": [WIDTH]},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "train": {"batch_size": BATCH, "threads": 1},
        "parallel": {"stages": stages, "microbatches": microbatches, "schedule": "1f1b"},
    })


def measure(adapter, steps: int) -> tuple[float, float]:
    """Median wall and CPU seconds per step, all ranks released together before each step."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, WIDTH), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    times, cpu = [], []
    for i in range(WARMUP + steps):
        adapter.allreduce(np.zeros(1))  # a barrier, so that stages start a step together
        t0, c0 = time.perf_counter(), time.thread_time()
        adapter.train_step(x, y, 0.01)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        elif i == WARMUP - 1 and hasattr(adapter, "epoch_metrics"):
            adapter.epoch_metrics()  # starts the bubble and memory counts afresh
    return float(np.median(times)), float(np.median(cpu))


def worker(single: bool) -> None:
    from hvdkit.adapters.base import get_adapter

    results = []
    for m in (1,) if single else MICROBATCHES:
        r = recipe(1 if single else STAGES, m)
        adapter = get_adapter("torch", r.parallel)
        world = adapter.init(threads=1)
        adapter.build(r, (WIDTH,), 10)
        seconds, cpu = measure(adapter, STEPS)
        row = {"m": m, "samples_per_sec": BATCH / seconds, "wall_per_cpu": seconds / cpu}
        if not single:
            report = adapter.epoch_metrics()["pipeline"]
            row.update(bubble=report["bubble"], stage_bubble=report["stage_bubble"],
                       busy=report["stage_busy_s"], cpu=report["stage_busy_cpu_s"],
                       bounds=report["bounds"], peak=report["stage_peak_microbatches"])
        results.append(row)
    if world.is_root:
        print("RESULT " + json.dumps(results), flush=True)


def launch(np_: int) -> list[dict]:
    program = [sys.executable, __file__, "--worker", *(["--single"] if np_ == 1 else [])]
    command = horovodrun_command(LaunchOptions(np=np_), program) if np_ > 1 else program
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    for line in out.stdout.splitlines():
        if "RESULT " in line:
            # raw_decode: MPI's output forwarding may glue other text after the JSON.
            return json.JSONDecoder().raw_decode(line.split("RESULT ", 1)[1])[0]
    raise SystemExit(f"benchmark job failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def main() -> None:
    alone = launch(1)[0]
    single = alone["samples_per_sec"]
    rows = launch(STAGES)
    print(f"2-stage MLP, batch {BATCH}, 1F1B, 1 thread per rank; bounds {rows[0]['bounds']}")
    for row in rows:
        ideal = (STAGES - 1) / (row["m"] + STAGES - 1)
        shared = ", ".join(f"{b / c:.2f}" for b, c in zip(row["busy"], row["cpu"], strict=True))
        print(f"m={row['m']}: bubble measured {row['bubble']:.3f} (stages "
              f"{', '.join(f'{b:.3f}' for b in row['stage_bubble'])}) vs ideal {ideal:.3f}, "
              f"|diff| {abs(row['bubble'] - ideal):.3f}; peak micro-batches held {row['peak']}; "
              f"{row['samples_per_sec']:.0f} samples/s; busy/cpu time (>1: cores shared with "
              f"other work) {shared}")
    last = rows[-1]
    ratio = last["samples_per_sec"] / single
    ideal = STAGES * (1 - (STAGES - 1) / (last["m"] + STAGES - 1))
    print(f"single process: {single:.0f} samples/s; pipeline m={last['m']}: "
          f"{last['samples_per_sec']:.0f} samples/s; speed-up {ratio:.3f} vs ideal {ideal:.3f} "
          f"(single process wall/cpu time {alone['wall_per_cpu']:.2f})")
    print("pipeline speed-up at m=8 / ideal 2(1-bubble):")
    print(f"{ratio / ideal:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    worker(args.single) if args.worker else main()
