"""The performance model against runs on this machine: predicted ÷ measured throughput at np=2.

For each recipe and framework: a 2-rank job with the exchange off (`parallel.sync none`) at the
per-rank batch calibrates compute, one 2-rank job of the model's own gradient exchange its
cost on the host besides the link, one 2-rank allreduce job the link (shared by all); then the
real np=2 job (strong scaling, 1 thread per rank, as `hvdkit scale`) is measured and compared
with the prediction of its exchange (ring; fp16 too with --exchanges ring,fp16). Target:
within ±10%. Rounds alternate calibration and measurement so that a drifting load hits both;
each case's ratio is the median over rounds.

    python benchmarks/bench_predict.py [--rounds 1] [--steps 0] [--recipes synthetic_mlp,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import record  # noqa: E402
from hvdkit.bench.calibrate import calibrate_link  # noqa: E402
from hvdkit.bench.collectives import Cluster  # noqa: E402
from hvdkit.bench.perfmodel import predict_step  # noqa: E402
from hvdkit.bench.predict import calibrate_workload  # noqa: E402
from hvdkit.bench.scale import SweepSpec, run_trial  # noqa: E402
from hvdkit.recipe import load_recipe  # noqa: E402
from hvdkit.runtime.world import cores  # noqa: E402

OUT = ROOT / "bench-results" / "predict"
RECIPES = ("synthetic_cnn", "synthetic_mlp", "resnet_small", "gpt_text")
STEPS = {"synthetic_mlp": 1000, "synthetic_cnn": 100, "gpt_text": 60, "resnet_small": 12}
"""Steps per job: several seconds of timed window each (ResNet-18: about a second a step)."""
LONG = ["train.epochs=1000"]  # the steps, not the recipe's one epoch, end each job


def measure(recipe: str, framework: str, exchange: str, steps: int, tag: str) -> dict:
    spec = SweepSpec(recipe=recipe, nps=[2], frameworks=[framework], mode="strong",
                     steps=steps, threads=1, overrides=LONG, out=str(OUT / tag))
    trial = {"framework": framework, "controller": "mpi", "sync": "allreduce",
             "compression": "fp16" if exchange == "fp16" else "none", "np": 2}
    return run_trial(spec, trial, 0)


def main(recipes: list[str], frameworks: list[str], exchanges: list[str], rounds: int,
         steps: int) -> float:
    load = os.getloadavg()[0]
    print(f"[bench_predict] load average at the start: {os.getloadavg()[0]:.2f} "
          f"({cores()} cores); other jobs on the host change every figure", flush=True)
    link = calibrate_link(OUT)
    print(f"link within this host: {link.bandwidth / 1e9:.2f} GB/s, "
          f"{link.latency * 1e6:.1f} us", flush=True)
    host = Cluster(2, 1, link, link)  # the 2 ranks measured, on this host
    ratios: dict[tuple[str, str, str], list[float]] = {}
    rows = []
    for r in range(rounds):
        for name in recipes:
            recipe = str(ROOT / "recipes" / f"{name}.yaml")
            per_rank = load_recipe(recipe, []).train.batch_size // 2
            n_steps = steps or STEPS[name]
            for framework in frameworks:
                tag = f"{name}-{framework}-r{r}"
                work, measured = calibrate_workload(recipe, framework, per_rank, 1, n_steps,
                                                    LONG, OUT / tag / "calibration", 2, link)
                cal, exchange_s = measured["compute"], measured["exchange_s"]
                for exchange in exchanges:
                    measured = measure(recipe, framework, exchange, n_steps, tag)
                    predicted = predict_step(work, host, exchange, per_rank)
                    ratio = predicted["samples_per_sec"] / measured["samples_per_sec"]
                    # the same calibration, gradients ready in proportion to their bytes
                    by_bytes = predict_step(replace(work, ready=()), host, exchange,
                                            per_rank)["samples_per_sec"]
                    ratios.setdefault((name, framework, exchange), []).append(ratio)
                    rows.append({"recipe": name, "framework": framework,
                                 "exchange": exchange, "round": r,
                                 "compute_step_ms": cal["step_s"] * 1e3,
                                 "exchange_alone_ms": exchange_s[exchange] * 1e3,
                                 "jitter": cal["jitter"],
                                 "straggle_ms": predicted["straggle_s"] * 1e3,
                                 "predicted": predicted["samples_per_sec"],
                                 "measured": measured["samples_per_sec"], "ratio": ratio,
                                 "ratio_ready_by_bytes": by_bytes / measured["samples_per_sec"],
                                 "exposed_comm_ms": predicted["exposed_comm_s"] * 1e3})
                    print(f"  {name:<14} {framework:<10} {exchange:<5} predicted "
                          f"{predicted['samples_per_sec']:8.0f}  measured "
                          f"{measured['samples_per_sec']:8.0f} samples/s  ratio {ratio:.3f} "
                          f"(gradients ready by bytes: "
                          f"{by_bytes / measured['samples_per_sec']:.3f})",
                          flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"link": vars(link), "rows": rows},
                                                 indent=2) + "\n")
    print("median predicted ÷ measured over rounds:")
    worst = 0.0
    table = []
    for (name, framework, exchange), values in ratios.items():
        median = statistics.median(values)
        worst = max(worst, abs(median - 1))
        inside = "within" if abs(median - 1) <= 0.10 else "OUTSIDE"
        print(f"  {name:<14} {framework:<10} {exchange:<5} {median:.3f} ({inside} ±10%)")
        table.append({"recipe": name, "framework": framework, "exchange": exchange,
                      "predicted ÷ measured": median,
                      "rounds' range": f"{min(values):.2f}–{max(values):.2f}",
                      "within ±10%": "yes" if inside == "within" else "no"})
    record("bench_predict", f"predicted ÷ measured throughput, np=2, median of {rounds} rounds",
           ["recipe", "framework", "exchange", "predicted ÷ measured", "rounds' range",
            "within ±10%"], table, "Strong scaling, 1 thread per rank; target within ±10%.",
           load)
    print(f"worst |predicted/measured - 1| at np=2: {worst:.3f}")
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="steps per job (0: STEPS)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--frameworks", default="torch,tensorflow")
    parser.add_argument("--exchanges", default="ring")
    a = parser.parse_args()
    main(a.recipes.split(","), a.frameworks.split(","), a.exchanges.split(","), a.rounds,
         a.steps)
