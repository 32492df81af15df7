"""Generated images for tests and benchmarks: an ImageFolder tree of JPEGs and PNGs, and the
same images as WebDataset shards. Made by code when needed, never committed.

Each class has its own colour cast and stripe direction under a random low-frequency field and
noise, so a small model learns them in a few steps, and the JPEGs are about as costly to
decode as photographs of their size (about 55 KB at 500x375, quality 90).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

CORRUPT_NAME = "corrupt.jpg"


def make_image(rng: np.random.Generator, label: int, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) uint8 image of class `label`."""
    from PIL import Image

    field = rng.integers(0, 200, (6, 8, 3), dtype=np.uint8)
    field[..., label % 3] = 230
    base = np.asarray(Image.fromarray(field).resize((width, height), Image.BILINEAR),
                      dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = np.pi * (label % 4) / 4
    stripes = 40 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / 12))
    noise = rng.normal(0, 8, base.shape)
    return np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG" if fmt == "jpg" else "PNG",
                                **({"quality": quality} if fmt == "jpg" else {}))
    return buffer.getvalue()


def write_image_folder(root: str | Path, classes: int = 3, train_per_class: int = 80,
                       val_per_class: int = 20, size: tuple[int, int] = (40, 32),
                       png_every: int = 4, corrupt: bool = True, seed: int = 0,
                       jitter: bool = True) -> Path:
    """root/train/class_<i>/ and root/val/class_<i>/ (val_per_class 0: no val/), JPEGs with
    every `png_every`-th image a PNG (0: none), of `size` (width, height), or with `jitter`
    sizes varying around it; with `corrupt`, train/class_0/corrupt.jpg is not an image.
    Returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            if count:
                folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = size
                if jitter:
                    w, h = int(w * rng.uniform(0.9, 1.2)), int(h * rng.uniform(0.9, 1.2))
                fmt = "png" if png_every and i % png_every == png_every - 1 else "jpg"
                (folder / f"{i:05d}.{fmt}").write_bytes(encode(make_image(rng, label, w, h), fmt))
    if corrupt:
        (root / "train" / "class_0" / CORRUPT_NAME).write_bytes(b"not an image " * 20)
    return root


def write_shards(folder: str | Path, out: str | Path, per_shard: int, split: str = "train",
                 seed: int = 0) -> list[Path]:
    """The images of folder/split/<class>/ as WebDataset shards out/<split>-NNNNNN.tar (the
    samples shuffled with `seed`, KEY.jpg or KEY.png with KEY.cls); returns the shards."""
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in (folder / split).iterdir() if p.is_dir())
    files = [(f, label) for label, name in enumerate(classes)
             for f in sorted((folder / split / name).iterdir())]
    order = np.random.default_rng(seed).permutation(len(files))
    shards = []
    for start in range(0, len(files), per_shard):
        path = out / f"{split}-{start // per_shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for i in order[start : start + per_shard]:
                file, label = files[i]
                key = f"{i:08d}"
                ext = file.suffix.lower().lstrip(".")
                for name, data in ((f"{key}.{ext}", file.read_bytes()),
                                   (f"{key}.cls", str(label).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    return shards
