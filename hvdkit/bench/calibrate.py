"""The link within this host, measured for the performance model (hvdkit.bench.perfmodel):
one 2-rank allreduce job of a few sizes, Horovod and raw mpi4py side by side."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from hvdkit.bench.perfmodel import Link


def calibrate_link(out: Path, sizes: tuple[int, ...] = (4, 4096, 1 << 20, 1 << 23)) -> Link:
    """α and β of the link between 2 ranks of this host: α from mpi4py's allreduce of the
    smallest size (Horovod's adds the cycle wait, modelled apart), β from the slope of
    Horovod's allreduce times over the sizes (n=2: t = 2α + S/β)."""
    from hvdkit.bench.allreduce import run_worker_job
    from hvdkit.launch.options import LaunchOptions

    result = run_worker_job(LaunchOptions(np=2, controller="mpi"),
                            ["--sizes", ",".join(map(str, sizes)), "--raw"],
                            out / "allreduce.log")
    med = {impl: {int(s): statistics.median(t) for s, t in result[impl].items()}
           for impl in ("horovod", "raw")}
    xs = np.array(sorted(med["horovod"]), dtype=np.float64)
    slope = np.polyfit(xs, [med["horovod"][int(x)] for x in xs], 1)[0]
    alpha = med["raw"][min(med["raw"])] / 2
    return Link(bandwidth=1 / max(slope, 1e-15), latency=alpha)
