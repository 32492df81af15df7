"""The input path: data read from disk costs nothing next to data in memory, and a GPU is kept
busy. Each figure is a ratio of two runs measured side by side in one job.

- CPU, np=2, 1 thread per rank: hvdkit on `npy` files read from disk ÷ hvdkit on the same
  uint8 arrays in memory (synthetic CNN, 32x32x3; rounds alternate; target >= 0.97). Whole
  runs alternate, and on a shared host one run's speed swings by ±15%: the median of 9
  rounds' ratios (3 gave 0.91 and then 1.04 with 7, idle).
- GPU, one process, where CUDA is present: hvdkit ÷ a plain PyTorch loop with the whole data
  set resident on the GPU, synthetic CNN at batch 512 and ResNet-50 at 224x224, batch 128
  (target >= 0.97). Skipped, saying so, without CUDA.

    python benchmarks/bench_input.py [--rounds 9] [--samples 4096]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import json_line  # noqa: E402
from hvdkit.launch.job import horovodrun_command  # noqa: E402
from hvdkit.launch.options import LaunchOptions  # noqa: E402


def write_images(folder: Path, samples: int) -> None:
    """uint8 32x32x3 images labelled 0..9, as the four .npy files `data.name: npy` reads."""
    rng = np.random.default_rng(0)
    n_test = samples // 8
    for part, n in (("train", samples), ("test", n_test)):
        np.save(folder / f"x_{part}.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        np.save(folder / f"y_{part}.npy", rng.integers(0, 10, n))


def gpu_available() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main(rounds: int, samples: int) -> float:
    if gpu_available():
        result = json_line([sys.executable, "benchmarks/workers/input_gpu.py"])
        for name, row in result.items():
            if isinstance(row, dict):
                print(f"GPU {name}: hvdkit {row['hvdkit']:.0f} images/s | plain PyTorch loop, "
                      f"data on the GPU, {row['plain_on_gpu']:.0f} | ratio {row['ratio']:.3f} "
                      f"(target >= 0.97)", flush=True)
            else:
                print(f"GPU {name}: {row}", flush=True)
    else:
        print("GPU part skipped: no CUDA device here (the CPU figure follows)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), samples)
        worker = [sys.executable, "benchmarks/workers/input.py", "--dir", tmp,
                  "--rounds", str(rounds)]
        rates = json_line(horovodrun_command(LaunchOptions(np=2), worker))
    ratios = [n / m for n, m in zip(rates["npy"], rates["memory"], strict=True)]
    print(f"CPU np=2 synthetic CNN: in memory {statistics.median(rates['memory']):.0f} "
          f"samples/s, npy on disk {statistics.median(rates['npy']):.0f} samples/s "
          f"(rounds: {[round(r) for r in rates['memory']]} / {[round(r) for r in rates['npy']]})")
    ratio = statistics.median(ratios)
    print(f"npy on disk / in memory, np=2 CPU: {ratio:.3f} (target >= 0.97)")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--samples", type=int, default=4096)
    args = parser.parse_args()
    main(args.rounds, args.samples)
