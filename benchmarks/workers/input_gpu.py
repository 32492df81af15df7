"""One process on one GPU: hvdkit against a plain PyTorch loop whose whole data set sits on the
GPU already (same model, batch and optimizer; no Horovod, no host copies, no read-backs).

hvdkit gets the same images as uint8 numpy arrays in host memory (a `Dataset`), so its input
path -- gather, scale, pin, copy on a side stream -- is what the ratio measures. Prints one
JSON line: images/s of each, per workload, and their ratio.

    python benchmarks/workers/input_gpu.py
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from hvdkit import Trainer, load_recipe
from hvdkit.adapters.torch.models import MODELS
from hvdkit.data import Dataset
from hvdkit.models.catalogue import MODEL_NAMES

# name -> (recipe overrides, image shape, samples, timed steps)
WORKLOADS = {
    "synthetic_cnn_b512": (["train.batch_size=512"], (32, 32, 3), 16384, 60),
    "resnet50_224_b128": (["model.name=resnet", "model.depth=50", "model.stem=imagenet",
                           "train.batch_size=128"], (224, 224, 3), 2048, 40),
}
WARMUP = 10


def images(shape: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def plain_rate(recipe, x: np.ndarray, y: np.ndarray, steps: int) -> float:
    """A plain loop: data resident on the GPU, random batches gathered there, no .item()."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = MODELS.get(recipe.model.name)(recipe.model, x.shape[1:], 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.optimizer.lr,
                          momentum=recipe.optimizer.momentum)
    xs = torch.from_numpy(x).to(device).float().div_(255)
    ys = torch.from_numpy(y).to(device)
    batch = recipe.train.batch_size
    loss_fn = torch.nn.CrossEntropyLoss()
    start = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            torch.cuda.synchronize()
            start = time.perf_counter()
        idx = torch.randint(0, len(xs), (batch,), device=device)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xs[idx]), ys[idx]).backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def hvdkit_rate(recipe, x: np.ndarray, y: np.ndarray) -> float:
    n_test = 256
    data = Dataset(x[n_test:], y[n_test:], x[:n_test], y[:n_test], num_classes=10)
    summary = Trainer(recipe, "torch", data=data, progress=False).fit()
    return summary["timed"]["samples_per_sec"]


def main() -> int:
    results = {}
    for name, (overrides, shape, n, steps) in WORKLOADS.items():
        if "model.name=resnet" in overrides and "resnet" not in MODEL_NAMES:
            results[name] = "skipped: no resnet model in this checkout (the models issue)"
            continue
        recipe = load_recipe("recipes/synthetic_cnn.yaml", [
            *overrides, "train.epochs=1", f"train.max_steps={WARMUP + steps}",
            f"train.timing_warmup_steps={WARMUP}", "train.eval_every_epochs=100",
            "train.log_every_steps=20", "train.device=gpu"])
        x, y = images(shape, n)
        ours, plain = hvdkit_rate(recipe, x, y), plain_rate(recipe, x, y, steps)
        results[name] = {"hvdkit": ours, "plain_on_gpu": plain, "ratio": ours / plain}
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
