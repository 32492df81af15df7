"""One rank of the allreduce microbenchmark (`hvdkit bench allreduce` starts it under horovodrun).

Times Horovod's in-place allreduce (`hvd.allreduce_`, op Sum, float32: what
DistributedOptimizer does to gradients) per message size, optionally raw mpi4py in-place
`Allreduce` on the same sizes in the same job, and the fusion test: 200 small tensors
sent asynchronously, then waited for — fused or not depending on HOROVOD_FUSION_THRESHOLD.
Rank 0 writes the latencies (seconds per call) as JSON.

    horovodrun -np 2 python -m hvdkit.bench.allreduce_worker --sizes 4,65536 --raw --out r.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

BUDGET_BYTES = 1 << 30  # bytes per size and implementation, to bound each size's time
MAX_ITERS, MIN_ITERS, WARMUP = 200, 24, 3


def iterations(nbytes: int) -> int:
    return int(min(MAX_ITERS, max(MIN_ITERS, BUDGET_BYTES // max(nbytes, 1))))


def time_calls(call: Any, barrier: Any, n: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    barrier()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="", help="message sizes in bytes, comma-separated")
    parser.add_argument("--raw", action="store_true", help="also time mpi4py Allreduce")
    parser.add_argument("--fusion", type=int, default=0, help="tensors in the fusion test")
    parser.add_argument("--fusion-bytes", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import horovod.torch as hvd
    import torch

    torch.set_num_threads(1)
    hvd.init()
    token = torch.zeros(1)

    def barrier() -> None:
        hvd.allreduce(token, op=hvd.Sum, name="barrier")

    result: dict[str, Any] = {"np": hvd.size(), "horovod": {}, "raw": {}}
    sizes = [int(s) for s in args.sizes.split(",") if s]
    comm = None
    if args.raw:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    for nbytes in sizes:
        count = max(1, nbytes // 4)
        tensor = torch.zeros(count)  # zeros: repeated in-place sums stay finite
        buf = np.zeros(count, np.float32)
        calls = {"horovod": lambda t=tensor: hvd.allreduce_(t, op=hvd.Sum, name="bench")}
        if comm is not None:
            calls["raw"] = lambda b=buf: comm.Allreduce(MPI.IN_PLACE, b)
        # Blocks of the implementations alternate, so that a load change hits both alike.
        n = iterations(nbytes)
        block = max(1, n // 4)
        for name in calls:
            result[name][nbytes] = []
        for _ in range(0, n, block):
            for name, call in calls.items():
                result[name][nbytes] += time_calls(call, barrier, block)
    if args.fusion:
        tensors = [torch.zeros(args.fusion_bytes // 4) for _ in range(args.fusion)]

        def many() -> None:
            handles = [hvd.allreduce_async_(t, op=hvd.Sum, name=f"small.{i}")
                       for i, t in enumerate(tensors)]
            for handle in handles:
                hvd.synchronize(handle)

        result["fusion"] = time_calls(many, barrier, args.rounds)
    if hvd.rank() == 0:
        args.out.write_text(json.dumps(result))
    hvd.shutdown()


if __name__ == "__main__":
    from hvdkit.runtime.rank import run_worker

    raise SystemExit(run_worker(main))
