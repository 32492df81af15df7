"""What the performance model (hvdkit.bench.perfmodel) measures on this host: the link within
it (a 2-rank allreduce job of a few sizes, Horovod and raw mpi4py side by side), a model's
exchange between 2 ranks, and when a PyTorch model's gradients are ready in backward."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from hvdkit.bench.collectives import Link
from hvdkit.bench.fusion import Horovod


def calibrate_link(out: Path, sizes: tuple[int, ...] = (4, 4096, 1 << 20, 1 << 23),
                   controller: str = "mpi") -> Link:
    """α and β of the link between 2 ranks of this host: β from the slope of Horovod's
    allreduce times over the sizes (n=2: t = 2α + S/β); α from mpi4py's allreduce of the
    smallest size under MPI (Horovod's adds the cycle wait, modelled apart), under Gloo from
    Horovod's less half a cycle."""
    from hvdkit.bench.allreduce import run_worker_job
    from hvdkit.launch.options import LaunchOptions

    raw = controller == "mpi"
    result = run_worker_job(LaunchOptions(np=2, controller=controller),
                            ["--sizes", ",".join(map(str, sizes)), *(["--raw"] if raw else [])],
                            out / f"allreduce-{controller}.log")
    med = {impl: {int(s): statistics.median(t) for s, t in result[impl].items()}
           for impl in ("horovod", "raw") if result[impl]}
    xs = np.array(sorted(med["horovod"]), dtype=np.float64)
    slope = np.polyfit(xs, [med["horovod"][int(x)] for x in xs], 1)[0]
    smallest = (med["raw"][min(med["raw"])] if raw
                else med["horovod"][min(med["horovod"])] - Horovod().cycle / 2)
    return Link(bandwidth=1 / max(slope, 1e-15), latency=max(smallest, 0.0) / 2)


def calibrate_exchange(out: Path, tensors: list[int], compute_seconds: float = 0.0,
                       controller: str = "mpi", budget: float = 10.0) -> dict[str, float]:
    """Mean seconds of a model's gradient exchange between 2 ranks of this host, as a step
    does it (`tensors`: its gradients' sizes in elements, forward order) after a compute
    phase of the step's `compute_seconds`, for "ring" (fp32) and "fp16" (compressed): the
    link's transfer and everything around it on the host (the wait for Horovod's cycle,
    negotiation, the fusion buffer's copies, the casts, caches as compute leaves them).
    Rounds: as many as fit `budget` seconds of compute per codec, 20 to 200."""
    from hvdkit.bench.allreduce import run_worker_job
    from hvdkit.launch.options import LaunchOptions

    rounds = max(20, min(200, int(budget / max(compute_seconds, 1e-3))))
    result = run_worker_job(LaunchOptions(np=2, controller=controller),
                            ["--tensors", ",".join(map(str, tensors)), "--rounds", str(rounds),
                             "--compute-seconds", f"{compute_seconds:.6f}"],
                            out / f"exchange-{controller}.log")
    return {"ring" if codec == "none" else codec: statistics.fmean(times)
            for codec, times in result["exchange"].items()}


def calibrate_readiness(recipe: str, batch: int, threads: int | None, overrides: list[str],
                        out: Path, steps: int = 12) -> list[float]:
    """When each of a PyTorch recipe's gradients is ready, as a fraction of backward (forward
    order): one process of `hvdkit.bench.gradient_ready` at `batch`."""
    from hvdkit.bench.jobs import run_logged

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ready.json"
        run_logged([sys.executable, "-m", "hvdkit.bench.gradient_ready", recipe,
                    "--batch", str(batch), "--steps", str(steps), "--threads",
                    str(threads or 1), *(a for o in overrides for a in ("--set", o)),
                    "--out", str(result)], out / "ready.log")
        return [float(f) for f in json.loads(result.read_text())["ready"]]
