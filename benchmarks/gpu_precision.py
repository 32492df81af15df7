"""`make bench-gpu`: ResNet-50 (224x224, batch 128) on one GPU in fp32, bf16, and bf16 with
torch.compile and channels-last; hvdkit against a plain PyTorch loop with the same settings.

Per mode: the plain loop with its whole data set resident on the GPU (random batches gathered
there; no Horovod, no host copies, no read-backs), the plain loop fed from pinned host memory,
and hvdkit, whose batches come from host memory (uint8 numpy: gathered, scaled, pinned, copied
on a side stream). Prints images/s of each, then hvdkit ÷ the resident plain loop (target
≥ 0.95) and the cost of host input (plain from host ÷ resident). Needs a CUDA GPU; finishes in
about 5 minutes on one (two compilations of ResNet-50 take most of it).

    python benchmarks/gpu_precision.py [--steps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hvdkit import Trainer, load_recipe  # noqa: E402
from hvdkit.adapters.torch.models import MODELS  # noqa: E402
from hvdkit.data import Dataset  # noqa: E402

SHAPE, SAMPLES, BATCH, WARMUP = (224, 224, 3), 1536, 128, 10
# mode -> (train.precision, train.compile, model.memory_format)
MODES = {"fp32": ("fp32", False, "contiguous"), "bf16": ("bf16", False, "contiguous"),
         "bf16+compile+channels_last": ("bf16", True, "channels_last")}


def recipe(mode: str, steps: int) -> Any:
    precision, compiled, fmt = MODES[mode]
    return load_recipe(ROOT / "recipes/resnet50_synthetic.yaml", [
        f"train.batch_size={BATCH}", "train.epochs=1", f"train.max_steps={WARMUP + steps}",
        f"train.timing_warmup_steps={WARMUP}", "train.eval_every_epochs=100",
        "train.log_every_steps=10", "train.device=gpu", f"train.precision={precision}",
        f"train.compile={str(compiled).lower()}", f"model.memory_format={fmt}"])


def plain_rate(r: Any, x: np.ndarray, y: np.ndarray, steps: int, resident: bool) -> float:
    """The plain loop: resident (batches gathered on the GPU) or fed from pinned host memory."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = MODELS.get("resnet")(r.model, SHAPE, 1000).to(device)
    if r.model.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if r.train.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=r.optimizer.lr, momentum=r.optimizer.momentum)
    host_x, host_y = torch.from_numpy(x).pin_memory(), torch.from_numpy(y).pin_memory()
    xs, ys = host_x.to(device), host_y.to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if r.train.precision == "bf16"
                else contextlib.nullcontext())
    loss_fn = torch.nn.CrossEntropyLoss()
    start = 0.0
    for step in range(WARMUP + steps):
        if step == WARMUP:
            torch.cuda.synchronize()
            start = time.perf_counter()
        if resident:
            idx = torch.randint(0, len(xs), (BATCH,), device=device)
            xb, yb = xs[idx], ys[idx]
        else:
            idx = torch.randint(0, len(host_x), (BATCH,))
            xb = host_x[idx].pin_memory().to(device, non_blocking=True)
            yb = host_y[idx].pin_memory().to(device, non_blocking=True)
        xb = xb.float().div_(255)
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(forward(xb), yb)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def hvdkit_rate(r: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float | None]:
    n_test = 128
    data = Dataset(x[n_test:], y[n_test:], x[:n_test], y[:n_test], num_classes=1000)
    summary = Trainer(r, "torch", data=data, progress=False).fit()
    return summary["timed"]["samples_per_sec"], summary.get("compile_seconds")


def main(steps: int) -> int:
    if not torch.cuda.is_available():
        print("bench-gpu needs a CUDA GPU; none here", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (SAMPLES, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, 1000, SAMPLES)
    results, ratios = {}, []
    for mode in MODES:
        r = recipe(mode, steps)
        ours, compile_seconds = hvdkit_rate(r, x, y)
        resident = plain_rate(r, x, y, steps, resident=True)
        host = plain_rate(r, x, y, steps, resident=False)
        results[mode] = {"hvdkit_images_per_sec": ours, "plain_resident_images_per_sec": resident,
                         "plain_from_host_images_per_sec": host,
                         "hvdkit_over_resident": ours / resident,
                         "host_over_resident": host / resident,
                         "compile_seconds": compile_seconds}
        ratios.append(ours / resident)
        print(f"{mode:<28} hvdkit {ours:8.1f} images/s | plain resident {resident:8.1f} | "
              f"plain from host {host:8.1f} | hvdkit ÷ resident {ours / resident:.3f} | "
              f"host ÷ resident {host / resident:.3f}", flush=True)
    (ROOT / "bench-results").mkdir(exist_ok=True)
    (ROOT / "bench-results/gpu_precision.json").write_text(json.dumps(results, indent=2))
    print("lowest hvdkit ÷ plain PyTorch loop with its data resident on the GPU "
          "(target >= 0.95):")
    print(f"{min(ratios):.3f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    sys.exit(main(parser.parse_args().steps))
