"""Scaling: 2-rank strong-scaling efficiency on the compute-bound CNN (1 thread per rank),
both frameworks, and ring-allreduce against the parameter server (and fp16 compression) on
the communication-heavy MLP — all configurations interleaved in one run.

Targets: CNN efficiency at np=2 ≥ 0.92 (torch), ≥ 0.90 (TensorFlow); MLP: both reported.
Reports (CSV, JSON, plots, markdown) go to bench-results/scaling-cnn/ and scaling-mlp/.

    python benchmarks/bench_scaling.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hvdkit.bench.scale import SweepSpec, sweep  # noqa: E402

OUT = ROOT / "bench-results"


def _rate(rows: list[dict], **match: object) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def main(repeats: int = 3) -> dict[str, float]:
    mlp = sweep(SweepSpec(recipe=str(ROOT / "recipes/synthetic_mlp.yaml"), nps=[1, 2],
                          syncs=["allreduce", "ps"], compressions=["none", "fp16"], threads=1,
                          steps=80, repeats=max(1, repeats - 1), timeline=False,
                          out=str(OUT / "scaling-mlp")))["results"]
    print("MLP (communication-heavy), np=2, torch, 1 thread per rank:")
    for sync in ("allreduce", "ps"):
        for comp in ("none", "fp16"):
            r = _rate(mlp, sync=sync, compression=comp, np=2)
            print(f"  {sync:<9} {comp:<4} {r['samples_per_sec']:8.0f} samples/s, efficiency "
                  f"{r['efficiency']:.3f}, {r['bytes_per_step'] / 1e6:.2f} MB/step moved, "
                  f"exchange share {r['comm_share'] or 0:.2f}")
    ring = _rate(mlp, sync="allreduce", compression="none", np=2)["samples_per_sec"]
    ps = _rate(mlp, sync="ps", compression="none", np=2)["samples_per_sec"]
    fp16 = _rate(mlp, sync="allreduce", compression="fp16", np=2)["samples_per_sec"]
    print(f"ring/ps throughput at np=2 = {ring / ps:.3f}; fp16/none (ring) = {fp16 / ring:.3f}")

    # Two epochs (128 steps at np=1): a window of seconds, not a noisy fraction of one.
    cnn = sweep(SweepSpec(recipe=str(ROOT / "recipes/synthetic_cnn.yaml"), nps=[1, 2],
                          frameworks=["torch", "tensorflow"], threads=1,
                          overrides=["train.epochs=2"], repeats=repeats,
                          out=str(OUT / "scaling-cnn")))["results"]
    eff = {fw: _rate(cnn, framework=fw, np=2)["efficiency"] for fw in ("torch", "tensorflow")}
    print(f"CNN 2-rank strong-scaling efficiency, 1 thread/rank: torch = {eff['torch']:.3f} "
          f"(target >= 0.92), tensorflow = {eff['tensorflow']:.3f} (target >= 0.90)")
    return {"ring_over_ps": ring / ps, "fp16_over_none": fp16 / ring, **eff}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
