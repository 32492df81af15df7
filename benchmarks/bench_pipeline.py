"""Pipeline benchmark: measured bubble vs (p−1)/(m+p−1), and pipeline speed-up vs its ideal.

A 2-stage MLP on PyTorch, 1 thread per rank, balanced in time: input 768 → 4 × 512 → 10, cut by
measured time (`split: time`) after the second layer. (Each stage then does the same matrix
work: the first layer computes no input gradient, and its wider input makes that up.) One
2-rank job alternates, for ROUNDS rounds: rank 0 trains the whole model in one process (plain
PyTorch, the same model, optimizer and batch) while rank 1 waits without spinning; then both
ranks run the pipeline (1F1B) for m in 1, 2, 4, 8. Figures are medians over the rounds, and the
speed-up is the median of each round's pipeline ÷ single-process ratio: side by side, so noise
from other work on the host hits both.

    python benchmarks/bench_pipeline.py                       # about a minute
    HVDKIT_BENCH_BATCH=1024 python benchmarks/bench_pipeline.py   # 128-row micro-batches at m=8

Batch 2048 gives micro-batches of 256 rows at m=8. Smaller ones cost more per sample on one CPU
thread (each micro-batch pays the per-operation overheads, and the weight-gradient products
accumulate into weight-sized outputs whatever the rows), which slows the stages themselves:
not the schedule's bubble, which this measures. The bubble is the busiest stage's idle share
(hvdkit.parallel.pipeline_step); the idle share of each stage and the imbalance are printed beside it.
Each line also shows busy ÷ CPU time per stage: above 1 when other processes share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvdkit.launcher import LaunchOptions, horovodrun_command  # noqa: E402
from hvdkit.recipe import recipe_from_dict  # noqa: E402

STAGES = 2
MICROBATCHES = (1, 2, 4, 8)
BATCH = int(os.environ.get("HVDKIT_BENCH_BATCH", "2048"))
WIDTH = int(os.environ.get("HVDKIT_BENCH_WIDTH", "512"))
IN_WIDTH = WIDTH * 3 // 2
WARMUP, STEPS, ROUNDS = 2, 10, 3


def recipe(stages: int, microbatches: int):
    return recipe_from_dict({
        "name": "bench-pipeline",
        "model": {"name": "mlp", "hidden": [WIDTH] * 4},
        "data": {"name": "synthetic", "shape": [IN_WIDTH]},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "train": {"batch_size": BATCH, "threads": 1},
        "parallel": {"stages": stages, "microbatches": microbatches, "schedule": "1f1b",
                     "split": "time"},
    })


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, IN_WIDTH), dtype=np.float32), rng.integers(0, 10, BATCH)


def timed_steps(step, barrier, after_warmup=lambda: None) -> float:
    """Median wall seconds of `step`, every rank released together (`barrier`) before each."""
    times = []
    for i in range(WARMUP + STEPS):
        if i == WARMUP:
            after_warmup()
        barrier()
        t0 = time.perf_counter()
        step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def single_process_step():
    """One training step of the whole model in plain PyTorch (the baseline), as a closure."""
    import torch

    from hvdkit.adapters.torch.adapter import make_optimizer
    from hvdkit.adapters.torch.models import MODELS

    r = recipe(1, 1)
    torch.manual_seed(r.train.seed)
    model = MODELS.get("mlp")(r.model, (IN_WIDTH,), 10)
    optimizer = make_optimizer(r.optimizer, model.parameters())
    x, y = (torch.from_numpy(a) for a in batch())

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def worker(out: Path) -> None:
    import torch
    from mpi4py import MPI

    from hvdkit.adapters.base import get_adapter
    from hvdkit.layout import ParallelLayout
    from hvdkit.parallel import parallelize
    from hvdkit.parallel.p2p import idle_wait

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    pipelines = {}
    for m in MICROBATCHES:  # one pipeline per m, each on its own adapter, in this one job
        r = recipe(STAGES, m)
        adapter = get_adapter("torch")
        rank = adapter.init([], threads=1, device="cpu", exclusive_gpu=False)[0]
        model = adapter.build_model(r, (IN_WIDTH,), 10)
        layout = ParallelLayout.from_recipe(r, STAGES)
        pipelines[m] = parallelize(adapter, layout, r, model, (IN_WIDTH,), rank)
    single = single_process_step() if comm.Get_rank() == 0 else None
    x, y = batch()
    rounds = []
    for _ in range(ROUNDS):
        row: dict = {}
        if single is not None:
            row["single"] = timed_steps(single, lambda: None)
        idle_wait([comm.Ibarrier()])  # rank 1 sleeps here while rank 0 runs alone
        for m, runner in pipelines.items():
            seconds = timed_steps(lambda a=runner: a.train_step(x, y, 0.01),
                                  lambda: idle_wait([comm.Ibarrier()]),
                                  after_warmup=runner.epoch_metrics)  # counts start afresh
            report = runner.epoch_metrics()["pipeline"]
            row[m] = {"seconds": seconds, **{k: report[k] for k in (
                "bubble", "imbalance", "stage_idle", "stage_busy_s", "stage_busy_cpu_s",
                "bounds", "stage_peak_microbatches")}}
        rounds.append(row)
    if comm.Get_rank() == 0:
        out.write_text(json.dumps(rounds))


def launch() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rounds.json"
        program = [sys.executable, __file__, "--worker", str(result)]
        job = subprocess.run(horovodrun_command(LaunchOptions(np=STAGES), program), cwd=ROOT,
                             capture_output=True, text=True, check=False,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if job.returncode or not result.exists():
            raise SystemExit(f"benchmark job failed:\n{job.stdout[-3000:]}\n{job.stderr[-3000:]}")
        return json.loads(result.read_text())


def median(values) -> float:
    return float(np.median(list(values)))


def fmt(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def main() -> None:
    rounds = launch()
    first = rounds[0][str(MICROBATCHES[0])]
    print(f"2-stage MLP {IN_WIDTH} → 4 × {WIDTH} → 10, batch {BATCH}, 1F1B, 1 thread per rank, "
          f"split by time: bounds {first['bounds']}; medians of {ROUNDS} side-by-side rounds")
    for m in MICROBATCHES:
        rows = [r[str(m)] for r in rounds]
        ideal = (STAGES - 1) / (m + STAGES - 1)
        bubble = median(r["bubble"] for r in rows)
        idle = [median(r["stage_idle"][s] for r in rows) for s in range(STAGES)]
        shared = [median(r["stage_busy_s"][s] / r["stage_busy_cpu_s"][s] for r in rows)
                  for s in range(STAGES)]
        print(f"m={m}: bubble measured {bubble:.3f} vs ideal {ideal:.3f}, |diff| "
              f"{abs(bubble - ideal):.3f} (rounds {fmt(r['bubble'] for r in rows)}); idle per "
              f"stage {fmt(idle)}, imbalance {median(r['imbalance'] for r in rows):.3f}; peak "
              f"micro-batches held {rows[0]['stage_peak_microbatches']}; "
              f"{BATCH / median(r['seconds'] for r in rows):.0f} samples/s; busy/cpu {fmt(shared)}")
    m = MICROBATCHES[-1]
    ratios = [r["single"] / r[str(m)]["seconds"] for r in rounds]
    ideal = STAGES * (1 - (STAGES - 1) / (m + STAGES - 1))
    speedup = median(ratios)
    print(f"single process: {BATCH / median(r['single'] for r in rounds):.0f} samples/s; "
          f"pipeline m={m}: {BATCH / median(r[str(m)]['seconds'] for r in rounds):.0f} samples/s; "
          f"speed-up {speedup:.3f} (rounds {fmt(ratios)}) vs ideal {ideal:.3f}")
    print(f"pipeline speed-up at m={m} / ideal 2(1-bubble):")
    print(f"{speedup / ideal:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    worker(args.worker) if args.worker else main()
