"""One hand-written peer loop, alone in its job: PyTorch DDP (gloo) or a plain Horovod loop, on
hvdkit's synthetic CNN recipe (the same model, data and batch per rank as `hvdkit train`), 1
intra-op thread per rank, each rank's shard of the data set resident (steploop.py). Rank 0
prints one JSON line with samples/s (global) over the steps after warm-up.

    python benchmarks/workers/peer.py --loop ddp              # 2 processes, torch's spawn
    horovodrun -np 2 python benchmarks/workers/peer.py --loop horovod
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from steploop import classes, resident_shard, steps_per_second, torch_step

from hvdkit import load_recipe
from hvdkit.adapters.torch.models import MODELS

RECIPE = "recipes/synthetic_cnn.yaml"
WARMUP = 10


def model_and_optimizer(recipe: Any, x: torch.Tensor, data: Any) -> tuple[Any, Any]:
    torch.manual_seed(recipe.train.seed)
    model = MODELS.get(recipe.model.name)(recipe.model, tuple(x.shape[1:]), classes(data))
    o = recipe.optimizer
    return model, torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum)


def run(loop: str, rank: int, world: int, port: int, steps: int) -> None:
    """The loop on this rank (DDP: `rank` of `world`, rendezvous on `port`; Horovod: its own)."""
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE)
    if loop == "ddp":
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        sync = dist.barrier
    else:
        import horovod.torch as hvd

        hvd.init()
        rank, world = hvd.rank(), hvd.size()

        def sync() -> None:
            hvd.allreduce(torch.zeros(1), name="peer.barrier")
    x, y, data = resident_shard(recipe, rank, world)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model, opt = model_and_optimizer(recipe, x, data)
    if loop == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    b = recipe.train.batch_size
    rate = steps_per_second(torch_step(model, opt, x, y, b), len(y) // b, steps, WARMUP,
                            sync=sync)
    if rank == 0:
        print(json.dumps({"loop": loop, "samples_per_sec": rate * b * world}), flush=True)
    if loop == "ddp":
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=("ddp", "horovod"), required=True)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    if args.loop == "horovod":  # the launcher started every rank
        run(args.loop, 0, 0, 0, args.steps)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(spawned, args=(args.loop, 2, port, args.steps), nprocs=2)


def spawned(rank: int, loop: str, world: int, port: int, steps: int) -> None:
    """mp.spawn's entry: the process index first."""
    run(loop, rank, world, port, steps)


if __name__ == "__main__":
    main()
