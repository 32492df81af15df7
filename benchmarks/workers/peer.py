"""PyTorch DDP (gloo backend) on hvdkit's synthetic CNN recipe: the peer hvdkit is measured against.
Spawns 2 processes on this host, 1 intra-op thread each, each with its shard of the data set
resident (steploop.py); rank 0 prints one JSON line with samples/s (global) over the steps
after warm-up.

    python benchmarks/workers/ddp.py [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from steploop import classes, resident_shard, steps_per_second, torch_step

from hvdkit import load_recipe
from hvdkit.adapters.torch.models import MODELS

RECIPE = "recipes/synthetic_cnn.yaml"
WARMUP = 10


def run(rank: int, world: int, port: int, steps: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    recipe = load_recipe(RECIPE)
    x, y, data = resident_shard(recipe, rank, world)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        MODELS.get(recipe.model.name)(recipe.model, tuple(x.shape[1:]), classes(data)))
    opt = torch.optim.SGD(model.parameters(), lr=recipe.optimizer.lr,
                          momentum=recipe.optimizer.momentum)
    b = recipe.train.batch_size
    rate = steps_per_second(torch_step(model, opt, x, y, b), len(y) // b, steps, WARMUP,
                            sync=dist.barrier)
    if rank == 0:
        samples = rate * recipe.train.batch_size * world
        print(json.dumps({"ddp_samples_per_sec": samples}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(2, port, args.steps), nprocs=2)


if __name__ == "__main__":
    main()
