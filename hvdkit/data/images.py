"""Images as people store them: a folder of JPEG and PNG files, one subfolder a class.

    data: {name: images, path: DIR, image_size: 224, augment: imagenet, workers: 8}

DIR/train/<class>/... holds the training images (any depth below the class folder; .jpg,
.jpeg and .png, any case), DIR/val/<class>/... the test images; without val/, a fixed
`test_fraction` of train/ is held out. A DIR without train/ is the class folders itself
(torchvision's ImageFolder root). Classes are the folder names sorted, so class i is the i-th
name; the run saves them (classes.json, carried by `hvdkit export`).

Batches are uint8 (N, size, size, 3), decoded in `data.workers` processes
(hvdkit.data.workers) and normalised by the ImageNet mean and std on the device
(`DataSource.normalization`; the adapters' inputs.py): a quarter of float32's host-to-device
traffic. A training sample's augmentation is drawn from a generator seeded by (train.seed,
epoch, the file), so any process decodes the same crop: workers or not, resumed or not.

A file that cannot be read is skipped with a warning, its place in the batch taken by another
image of the same batch (deterministically), and counted (summary.json `input`); when more
than `data.unreadable_limit` of the files are unreadable, the run stops with one line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.config import DataConfig
from hvdkit.data.datasets import DATASETS, holdout
from hvdkit.data.files import existing
from hvdkit.data.imagecodec import transform
from hvdkit.data.samples import DataSource
from hvdkit.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED = 3
"""Unreadable files named one by one in warnings; later ones are counted."""


def normalize(x: np.ndarray, normalization: tuple[Any, Any]) -> np.ndarray:
    """uint8 images to float32, normalised as on the device (for a model's first probe)."""
    mean, std = (np.asarray(v, dtype=np.float32) * 255 for v in normalization)
    return (x.astype(np.float32) - mean) * (1 / std)


class FolderStore:
    """The files of a folder: their paths relative to it, packed into one byte array (a
    million Python strings would cost each rank, and each forked worker that touches them,
    about 100 MB)."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        encoded = [os.fsencode(n) for n in names]
        self.offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
        self.blob = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def name(self, i: int) -> str:
        return os.fsdecode(self.blob[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def read(self, i: int) -> bytes:
        with open(self.root / self.name(i), "rb") as f:
            return f.read()


class Unreadable:
    """The unreadable files one rank met (in this process: workers send theirs back), warned
    about and checked against the limit."""

    def __init__(self, total: int, limit: float, where: str) -> None:
        self.total, self.limit, self.where = total, limit, where
        # At least one file is forgiven, however small the set (limit 0: none).
        self.allowed = max(1, int(limit * total)) if limit > 0 else 0
        self.found: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, bad: list[tuple[str, str]]) -> None:
        with self._lock:
            for name, reason in bad:
                if name in self.found:
                    continue
                self.found[name] = reason
                if len(self.found) <= NAMED:
                    _warn(f"unreadable image skipped: {name} ({reason}); another image of its "
                          f"batch takes its place")
                elif len(self.found) == NAMED + 1:
                    _warn("more unreadable images skipped; summary.json counts them "
                          "(input.unreadable_images)")
            if len(self.found) > self.allowed:
                named = ", ".join(f"{n} ({r})" for n, r in list(self.found.items())[:NAMED])
                raise UserError(
                    f"{len(self.found)} of the {self.total} images of {self.where} cannot be "
                    f"read, more than data.unreadable_limit ({self.limit:g}): {named}; "
                    f"repair or remove them, or raise data.unreadable_limit")


def _warn(message: str) -> None:
    print(f"hvdkit: warning: {message}", file=sys.stderr, flush=True)


class ImageSamples:
    """One split of images: `items` (positions in `store`) and their labels, decoded and
    transformed to uint8 (size, size, 3) batches. `set_epoch` (the loader) picks the epoch
    the augmentation draws from; `shards` (webdataset: each item's shard) makes the loader's
    epoch order walk the shards in groups of `shard_group` (`epoch_order`)."""

    def __init__(self, store: Any, items: np.ndarray, labels: np.ndarray, *, size: int,
                 train: bool, augment: str, seed: int, unreadable: Unreadable, key: str,
                 shards: np.ndarray | None = None, shard_group: int = 0) -> None:
        self.store, self.items, self.labels = store, items, labels
        self.size, self.train, self.augment, self.seed = size, train, augment, seed
        self.unreadable, self.key = unreadable, key
        self.shards, self.shard_group = shards, shard_group
        self.epoch = 0
        self.pool: Any = None
        """hvdkit.data.workers.DecodePool, set by start_workers (data.workers > 0)."""
        self._images, self._seconds = 0, 0.0  # decoded here, in the prefetch thread

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def decode(self, positions: np.ndarray, epoch: int,
               out: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray, list]:
        """The batch of split positions `positions` at `epoch`: (x, y, unreadable files as
        (name, reason)). Runs in a worker process or in the prefetch thread. With `out` (a
        worker's block of shared memory) x is written there and None returned in its place."""
        positions = np.asarray(positions, dtype=np.int64)
        x = out if out is not None else np.empty(self.batch_shape(len(positions)), np.uint8)
        y = self.labels[positions].astype(np.int64)
        bad: list[tuple[str, str]] = []
        good = np.zeros(len(positions), dtype=bool)
        for k, position in enumerate(positions.tolist()):
            failure = self._decode_into(x, k, position, epoch)
            if failure is None:
                good[k] = True
            else:
                bad.append(failure)
        if bad:
            self._replace(x, y, positions, good, epoch)
        return (None if out is not None else x), y, bad

    def batch_shape(self, n: int) -> tuple[int, int, int, int]:
        return n, self.size, self.size, 3

    def _decode_into(self, x: np.ndarray, k: int, position: int,
                     epoch: int) -> tuple[str, str] | None:
        item = int(self.items[position])
        rng = np.random.default_rng((self.seed, epoch, item)) if self.train else None
        try:
            x[k] = transform(self.store.read(item), self.size, self.train, self.augment, rng)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # any decoder's complaint: the file is unreadable
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return self.store.name(item), reason[:200]
        return None

    def _replace(self, x: np.ndarray, y: np.ndarray, positions: np.ndarray, good: np.ndarray,
                 epoch: int) -> None:
        """Each unreadable sample becomes the next readable one of the batch (cyclically); a
        batch without one takes the split's next readable image after its first."""
        if not good.any():
            for step in range(1, len(self)):
                position = (int(positions[0]) + step) % len(self)
                if self._decode_into(x, 0, position, epoch) is None:
                    y[0], good[0] = self.labels[position], True
                    break
            else:
                raise UserError(f"no image of {self.unreadable.where} can be read")
        ok = np.flatnonzero(good)
        for k in np.flatnonzero(~good):
            source = ok[np.searchsorted(ok, k) % len(ok)]
            x[k], y[k] = x[source], y[source]

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        x, y, bad = self.decode(idx, self.epoch)
        self._images += len(y)
        self._seconds += time.perf_counter() - started
        self.unreadable.add(bad)
        return x, y

    def submit(self, idx: np.ndarray) -> Any:
        """Start decoding a batch in the pool; `.get()` gives `take(idx)`."""
        shape = self.batch_shape(len(idx))
        return _Decoding(self.pool.submit(self.key, np.asarray(idx), self.epoch,
                                          out=(shape, np.uint8)), self.unreadable.add)

    def decode_stats(self) -> tuple[int, float, int]:
        """(images decoded, seconds the decoders spent, decoders) so far, in this rank."""
        if self.pool is not None:
            return (*self.pool.stats(), self.pool.workers)
        return self._images, self._seconds, 1

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray | None:
        """The epoch's global sample order for shards (None: the loader's own shuffle): the
        shards in a seeded order, in groups of shard_group, the samples of a group shuffled
        together. Every rank computes the same order."""
        if self.shards is None:
            return None
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        ids = np.unique(self.shards)
        by_shard = np.argsort(self.shards, kind="stable")
        bounds = np.r_[np.searchsorted(self.shards[by_shard], ids), len(by_shard)]
        shard_order = rng.permutation(len(ids))
        group = self.shard_group or len(ids)
        parts = []
        for start in range(0, len(ids), group):
            members = np.concatenate([by_shard[bounds[s] : bounds[s + 1]]
                                      for s in shard_order[start : start + group]])
            parts.append(rng.permutation(members))
        return np.concatenate(parts)


class _Decoding:
    def __init__(self, pending: Any, report: Callable[[list], None]) -> None:
        self.pending, self.report = pending, report

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        x, y, bad = self.pending.get()
        self.report(bad)
        return x, y


def image_source(store: Any, train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], classes: int, config: DataConfig,
                 seed: int, where: str, class_names: list[str] | None = None,
                 shards: np.ndarray | None = None) -> DataSource:
    """The DataSource of a store's images: training and test (items, labels)."""
    unreadable = Unreadable(len(train[0]) + len(test[0]), config.unreadable_limit, where)
    common = dict(size=config.image_size, augment=config.augment, seed=seed,
                  unreadable=unreadable)
    train_split = ImageSamples(store, *train, train=True, key="images-train", shards=shards,
                               shard_group=config.shard_group, **common)
    test_split = ImageSamples(store, *test, train=False, key="images-test", **common)
    return DataSource(train=train_split, test=test_split, task="classification",
                      input_shape=(config.image_size, config.image_size, 3),
                      input_dtype="float32", num_classes=classes,
                      normalization=(IMAGENET_MEAN, IMAGENET_STD), class_names=class_names)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
    if not classes:
        loose = any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir())
        holds = " (its images lie loose in it)" if loose else ""
        raise UserError(f"data.path: {folder} has no class folders{holds}; expected "
                        f"{folder}/<class>/*.jpg|jpeg|png, one folder a class")
    return classes


def _images_of(folder: Path) -> list[str]:
    """Image files below `folder`, as paths relative to it, in a fixed order."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        rel = os.path.relpath(top, folder)
        for f in sorted(files):
            if not _hidden(f) and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
                found.append(f if rel == "." else os.path.join(rel, f))
    return found


def _listing(root: Path, folder: Path, classes: list[str],
             must_fill: bool) -> tuple[list[str], list[int]]:
    names: list[str] = []
    labels: list[int] = []
    prefix = os.path.relpath(folder, root)
    for label, name in enumerate(classes):
        files = _images_of(folder / name) if (folder / name).is_dir() else []
        if not files and must_fill:
            raise UserError(f"data.path: class folder {folder / name} holds no .jpg, .jpeg "
                            f"or .png images")
        names += [os.path.normpath(os.path.join(prefix, name, f)) for f in files]
        labels += [label] * len(files)
    return names, labels


@DATASETS.register("images")
def images(config: DataConfig, seed: int) -> DataSource:
    """A folder of JPEG/PNG images in class folders (the module doc)."""
    root = existing(str(config.path), "folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val" if train_dir != root and (root / "val").is_dir() else None
    classes = _class_folders(train_dir)
    if config.classes and config.classes < len(classes):
        raise UserError(f"data.classes is {config.classes} but {train_dir} has {len(classes)} "
                        f"class folders")
    names, labels = _listing(root, train_dir, classes, must_fill=True)
    n_train = len(names)
    if val_dir is not None:
        extra = sorted(set(_class_folders(val_dir)) - set(classes))
        if extra:
            raise UserError(f"data.path: {val_dir} has class folders that train/ lacks: "
                            f"{', '.join(extra[:5])}")
        val_names, val_labels = _listing(root, val_dir, classes, must_fill=False)
        if not val_names:
            raise UserError(f"data.path: {val_dir} holds no .jpg, .jpeg or .png images")
        names, labels = names + val_names, labels + val_labels
        train_at, test_at = np.arange(n_train), np.arange(n_train, len(names))
    else:
        if n_train < 2:
            raise UserError(f"data.path: {train_dir} holds one image; it cannot be split "
                            f"into training and test")
        train_at, test_at = holdout(n_train, config.test_fraction)
    y = np.asarray(labels, dtype=np.int64)
    store = FolderStore(root, names)
    return image_source(store, (train_at, y[train_at]), (test_at, y[test_at]),
                        max(config.classes, len(classes)), config, seed, str(root),
                        class_names=classes)
