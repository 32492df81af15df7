"""Images: hvdkit's decoding against a hand-written PyTorch DataLoader, and training from a JPEG
folder against the same images in memory. Both on generated 500x375 JPEGs (quality 90, about
55 KB each, hvdkit.data.sample_images), made here and deleted after.

1. Decode + augment, one process: hvdkit's `images` source (its loader, prefetch thread and
   `--workers` decoding processes) ÷ torch.utils.data.DataLoader over a map-style Dataset
   doing what torchvision's ImageFolder with RandomResizedCrop(224), RandomHorizontalFlip and
   PILToTensor does, written out (torchvision is not installed: PyPI's fails to import beside
   torch 2.13.0): PIL open, convert RGB, crop, resize bilinear, flip; uint8 out, batch 64, the
   same number of workers. Whole epochs alternate, the first of each left out; the median of
   the rounds' ratios (target >= 1.0).
2. End to end at np=2 on the CPU (1 thread per rank): ResNet-18 with the small stem
   (resnet_small.yaml) at 32x32, from the JPEG folder (`--workers` processes per rank) ÷ from
   the same images decoded once and held in memory, alternating in one job
   (benchmarks/workers/images_train.py; target >= 0.95), with the share of the loop spent
   waiting for data.

    python benchmarks/bench_images.py [--images 1024] [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jobs import json_line  # noqa: E402
from hvdkit.data.sample_images import write_image_folder  # noqa: E402
from hvdkit.launch.job import horovodrun_command  # noqa: E402
from hvdkit.launch.options import LaunchOptions  # noqa: E402

SIZE, BATCH, CLASSES = 224, 64, 4


def torchvision_like(root: Path):
    """ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip + PILToTensor, written out
    as torchvision 0.2x does them on PIL images (its RNG calls included)."""
    import torch
    from PIL import Image

    class Folder(torch.utils.data.Dataset):
        def __init__(self) -> None:
            classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
            self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                            for f in sorted(os.listdir(root / c))]

        def __len__(self) -> int:
            return len(self.samples)

        @staticmethod
        def get_params(width: int, height: int) -> tuple[int, int, int, int]:
            area = height * width
            log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3)))
            for _ in range(10):
                target = area * torch.empty(1).uniform_(0.08, 1.0).item()
                aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
                w = round(math.sqrt(target * aspect))
                h = round(math.sqrt(target / aspect))
                if 0 < w <= width and 0 < h <= height:
                    i = torch.randint(0, height - h + 1, size=(1,)).item()
                    j = torch.randint(0, width - w + 1, size=(1,)).item()
                    return i, j, h, w
            ratio = width / height  # the fallback: the whole image, clamped to the ratios
            if ratio < 3 / 4:
                w, h = width, round(width / (3 / 4))
            elif ratio > 4 / 3:
                w, h = round(height * (4 / 3)), height
            else:
                w, h = width, height
            return (height - h) // 2, (width - w) // 2, h, w

        def __getitem__(self, index: int):
            path, label = self.samples[index]
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")  # torchvision's pil_loader
            i, j, h, w = self.get_params(*img.size)
            img = img.crop((j, i, j + w, i + h)).resize((SIZE, SIZE), Image.BILINEAR)
            if torch.rand(1) < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)  # PILToTensor
            return x, label

    return Folder()


def decode_rates(folder: Path, workers: int, rounds: int) -> dict[str, list[float]]:
    """Images/s of whole epochs, alternating hvdkit and the DataLoader (first epochs left out)."""
    import torch

    from hvdkit.data import ShardedLoader, build_source
    from hvdkit.data.workers import start_workers
    from hvdkit.recipe import recipe_from_dict

    torch.set_num_threads(1)
    config = recipe_from_dict({"model": {"name": "resnet"}, "optimizer": {"name": "sgd"},
                               "data": {"name": "images", "path": str(folder),
                                        "image_size": SIZE, "workers": workers}}).data
    data = build_source(config, seed=0)
    start_workers(data, workers)
    ours = ShardedLoader(data.train, batch_size=BATCH, seed=0, prefetch=2)
    theirs = torch.utils.data.DataLoader(
        torchvision_like(folder / "train"), batch_size=BATCH, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=True, prefetch_factor=2)

    def epoch(name: str, e: int) -> float:
        started, images = time.perf_counter(), 0
        for x, _ in (ours.batches(e) if name == "hvdkit" else theirs):
            images += len(x)
        return images / (time.perf_counter() - started)

    rates: dict[str, list[float]] = {"hvdkit": [], "dataloader": []}
    try:
        for e in range(rounds + 1):
            for name in rates:
                rate = epoch(name, e)
                if e:
                    rates[name].append(rate)
    finally:
        data.close()
    return rates


def main(images: int, workers: int, rounds: int, train_rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_image_folder(Path(tmp) / "jpegs", classes=CLASSES,
                                    train_per_class=images // CLASSES, val_per_class=16,
                                    size=(500, 375), png_every=0, corrupt=False, jitter=False)
        rates = decode_rates(folder, workers, rounds)
        ratios = [o / t for o, t in zip(rates["hvdkit"], rates["dataloader"], strict=True)]
        decode_ratio = statistics.median(ratios)
        print(f"decode + augment to 224x224, 500x375 JPEGs, {workers} workers, one process: "
              f"hvdkit {statistics.median(rates['hvdkit']):.0f} images/s | PyTorch DataLoader "
              f"+ PIL (torchvision's transforms) {statistics.median(rates['dataloader']):.0f} "
              f"images/s | ratio {decode_ratio:.3f} (rounds {[round(r, 3) for r in ratios]}; "
              f"target >= 1.0)", flush=True)
        worker = [sys.executable, "benchmarks/workers/images_train.py", "--folder", str(folder),
                  "--workers", str(workers), "--rounds", str(train_rounds)]
        result = json_line(horovodrun_command(LaunchOptions(np=2), worker))
    runs = [f / m for f, m in zip(result["folder"], result["memory"], strict=True)]
    ratio = statistics.median(runs)
    print(f"np=2 CPU ResNet-18 (small stem) 32x32: in memory "
          f"{statistics.median(result['memory']):.1f} images/s, from the JPEG folder "
          f"{statistics.median(result['folder']):.1f} images/s ({workers} workers per rank, "
          f"each busy {100 * statistics.median(result['busy']):.1f}% of the time; data wait "
          f"{100 * statistics.median(result['wait']):.1f}% of the loop; rounds "
          f"{[round(r, 3) for r in runs]})", flush=True)
    print(f"decode ÷ DataLoader {decode_ratio:.3f} (target >= 1.0); JPEG folder ÷ in memory, "
          f"np=2 CPU: {ratio:.3f} (target >= 0.95)")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.images, args.workers, args.rounds, args.train_rounds)
