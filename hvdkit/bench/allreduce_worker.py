"""One rank of the allreduce microbenchmark (`hvdkit bench allreduce` starts it under horovodrun).

Times Horovod's in-place allreduce (`hvd.allreduce_`, op Sum, float32: what
DistributedOptimizer does to gradients) per message size, optionally raw mpi4py in-place
`Allreduce` on the same sizes in the same job, the fusion test: 200 small tensors
sent asynchronously, then waited for — fused or not depending on HOROVOD_FUSION_THRESHOLD —
and a model's exchange (`--tensors`): its gradients handed over as a step's backward readies
them, in fp32 and with fp16 compression, each time after a compute phase of
`--compute-seconds` (or a barrier). Rank 0 writes the latencies (seconds per call) as JSON.

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
GRADIENT_SD = 1e-3
"""The spread of the exchanged values: synthetic_mlp's gradients after 60 steps had a median
|g| of 6.5e-4 and 6% of them below float16's normal range (6.1e-5); normal(0, 1e-3) has 5%."""


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


def time_exchanges(hvd: Any, torch: Any, counts: list[int], barrier: Any, rounds: int,
                   cycle: float, compute_seconds: float = 0.0) -> dict[str, list[float]]:
    """Seconds of a model's gradient exchange as a step does it: every gradient handed to
    Horovod in backward's order (last layer first), cast to fp16 first and back after under
    compression, then all waited for. Each call follows a compute phase of `compute_seconds`
    (matrix products, then the model's gradients and parameters touched as backward and the
    update do: caches, memory and Horovod's loop as a step leaves them), or a barrier when 0;
    then the same random pause on every rank spreads the start over Horovod's cycle, as a
    step's end falls anywhere in it, so the wait for the next cycle is in the figure on
    average. The gradients hold values of a gradient's usual size, not zeros: float16's
    casts and sums cost more on small values (subnormals), which zeros never reach."""
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(c, generator=generator) * GRADIENT_SD for c in counts]
    grads = [v.clone() for v in values]
    params = [torch.zeros(c) for c in counts]
    a = torch.ones(256, 256)
    pauses = np.random.default_rng(0).uniform(0, cycle, size=rounds)  # equal on every rank

    def compute() -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < compute_seconds:
            torch.mm(a, a)
        for grad, param, value in zip(grads, params, values, strict=True):
            grad.copy_(value)  # this step's gradient (the last exchange averaged it)
            param.add_(grad)

    out: dict[str, list[float]] = {}
    for codec in ("none", "fp16"):
        def exchange(codec: str = codec) -> None:
            handles = []
            for i, grad in reversed(list(enumerate(grads))):
                wire = grad.half() if codec == "fp16" else grad
                handles.append((grad, hvd.allreduce_async_(wire, op=hvd.Average,
                                                           name=f"grad.{i}")))
            for grad, handle in handles:
                reduced = hvd.synchronize(handle)
                if reduced.dtype != grad.dtype:
                    grad.copy_(reduced)

        for _ in range(WARMUP):
            exchange()
        out[codec] = []
        for pause in pauses:
            compute() if compute_seconds else barrier()
            time.sleep(pause)
            started = time.perf_counter()
            exchange()
            out[codec].append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="", help="message sizes in bytes, comma-separated")
    parser.add_argument("--raw", action="store_true", help="also time mpi4py Allreduce")
    parser.add_argument("--fusion", type=int, default=0, help="tensors in the fusion test")
    parser.add_argument("--fusion-bytes", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tensors", default="",
                        help="a model's gradient sizes in elements, forward order")
    parser.add_argument("--compute-seconds", type=float, default=0.0,
                        help="a compute phase before each exchange (0: a barrier)")
    parser.add_argument("--cycle", type=float, default=1e-3,
                        help="Horovod's cycle time (s): the exchange's start is spread over it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from hvdkit.runtime.mpi import start_mpi_here

    mpi = start_mpi_here() if args.raw else None  # before Horovod: mpi4py runs beside it
    import horovod.torch as hvd
    import torch

    torch.set_num_threads(1)
    hvd.init()
    token = torch.zeros(1)

    def barrier() -> None:
        hvd.allreduce(token, op=hvd.Sum, name="barrier")

    result: dict[str, Any] = {"np": hvd.size(), "horovod": {}, "raw": {}}
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for nbytes in sizes:
        count = max(1, nbytes // 4)
        tensor = torch.zeros(count)  # zeros: repeated in-place sums stay finite
        buf = np.zeros(count, np.float32)
        calls = {"horovod": lambda t=tensor: hvd.allreduce_(t, op=hvd.Sum, name="bench")}
        if mpi is not None:
            calls["raw"] = lambda b=buf: mpi.COMM_WORLD.Allreduce(mpi.IN_PLACE, b)
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
    counts = [int(c) for c in args.tensors.split(",") if c]
    if counts:
        result["exchange"] = time_exchanges(hvd, torch, counts, barrier, args.rounds, args.cycle,
                                            args.compute_seconds)
    if hvd.rank() == 0:
        args.out.write_text(json.dumps(result))
    hvd.shutdown()


if __name__ == "__main__":
    from hvdkit.runtime.rank import run_worker

    raise SystemExit(run_worker(main))
