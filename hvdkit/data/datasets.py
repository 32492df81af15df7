"""Registered data sets, your own data, and the one function that turns either into a source.

A builder is `@DATASETS.register("name")` on a function `(config, seed)` returning a `Dataset`
(numpy arrays) or a `DataSource` (hvdkit.data.samples). `to_source` takes what a builder or a
user hands over -- a `Dataset`, a map-style data set (`len()` and `[i] -> (x, y)` numpy), a
(train, test) pair of map-style data sets, or a `DataSource` -- checks it, and returns a
`DataSource`. The file sources (npy, text, tokens) live in hvdkit.data.files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hvdkit.config import DataConfig
from hvdkit.data.samples import ArraySamples, DataSource, MapSamples, Task
from hvdkit.errors import UserError
from hvdkit.models.registry import Registry

HOLDOUT_SEED = 1234
"""Held-out test samples depend on the data, not the run's seed: every run tests alike."""


@dataclass
class Dataset:
    """Your own data as arrays: in memory, or on disk (`hvdkit.data.open_npy(path)`).

    Inputs are channels last; uint8 inputs are scaled to [0, 1] batch by batch. For language
    modelling (`task="language_model"`, the default where labels are sequences) x and y are
    (samples, block_size) token ids and `num_classes` is the vocabulary size.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 0
    """Classes (0: data.classes, else the largest training label + 1), or the vocabulary."""
    task: Task | None = None
    """`classification` or `language_model`; None: language modelling where the labels are
    sequences (samples x positions), else classification."""

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = "language_model" if np.ndim(self.y_train) == 2 else "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DATASETS: Registry = Registry("data set")
TEACHER_FEATURES = 4096


def to_source(data: Any, config: DataConfig) -> DataSource:
    """A checked `DataSource` from a `Dataset`, map-style data (one set, or a (train, test)
    pair), or a `DataSource`; anything else is a UserError."""
    if isinstance(data, DataSource):
        return data
    if isinstance(data, Dataset):
        return _from_arrays(data, config)
    if isinstance(data, tuple) and len(data) == 2 and all(map(is_map_style, data)):
        return _from_map_style(data[0], data[1], config)
    if is_map_style(data):
        return _from_map_style(data, None, config)
    raise UserError(f"data must be a hvdkit.data.Dataset of arrays or a map-style data set "
                    f"(len() and [i] -> (x, y)); got {type(data).__name__}")


def is_map_style(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def holdout(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) positions: a seeded `fraction` of n held out as the test set."""
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    n_test = min(max(1, round(n * fraction)), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def resolve_classes(given: int, y_train: np.ndarray, where: str) -> int:
    """`given` classes, or the largest training label + 1 when 0."""
    if given:
        return given
    if len(y_train) == 0:
        raise UserError(f"{where}: no training samples")
    return int(np.max(y_train)) + 1


def check_labels(y: np.ndarray, classes: int, where: str) -> None:
    """Integer labels, one per sample, inside [0, classes): else a one-line UserError."""
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: labels must be integers, got {y.dtype}")
    if y.ndim != 1:
        raise UserError(f"{where}: labels must be one integer per sample, got shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise UserError(f"{where}: label {bad} is outside [0, {classes}); set data.classes "
                        f"to the number of classes")


def check_pair(x: Any, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise UserError(f"{where}: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise UserError(f"{where}: no samples")


def _from_arrays(data: Dataset, config: DataConfig) -> DataSource:
    check_pair(data.x_train, data.y_train, "Dataset x_train/y_train")
    check_pair(data.x_test, data.y_test, "Dataset x_test/y_test")
    if tuple(data.x_test.shape[1:]) != data.input_shape:
        raise UserError(f"Dataset: x_test samples have shape {tuple(data.x_test.shape[1:])}, "
                        f"x_train samples {data.input_shape}")
    tokens = data.task == "language_model"
    if tokens:
        classes = data.num_classes or config.vocab_size
        if not classes:
            raise UserError("Dataset: a language-model data set needs num_classes (the "
                            "vocabulary size) or data.vocab_size")
    else:
        classes = resolve_classes(data.num_classes or config.classes, data.y_train, "Dataset")
        check_labels(data.y_train, classes, "Dataset y_train")
        check_labels(data.y_test, classes, "Dataset y_test")
    return DataSource(
        train=ArraySamples(data.x_train, data.y_train, tokens=tokens),
        test=ArraySamples(data.x_test, data.y_test, tokens=tokens),
        task=data.task, input_shape=data.input_shape,
        input_dtype="int64" if tokens else "float32", num_classes=classes)


def _from_map_style(train: Any, test: Any, config: DataConfig) -> DataSource:
    if len(train) == 0:
        raise UserError("map-style data set: no samples")
    classes = getattr(train, "num_classes", 0) or config.classes
    if not classes:
        raise UserError("map-style data set: set data.classes (or give the data set a "
                        "num_classes attribute)")
    if test is None:
        train_at, test_at = holdout(len(train), config.test_fraction)
        test = train
    else:
        train_at, test_at = np.arange(len(train)), np.arange(len(test))
    x0, _ = train[0]
    return DataSource(
        train=MapSamples(train, train_at, classes), test=MapSamples(test, test_at, classes),
        task="classification", input_shape=tuple(np.shape(x0)), input_dtype="float32",
        num_classes=classes)


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple:
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


@DATASETS.register("digits")
def digits(config: DataConfig, seed: int) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey levels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = (raw.images / 16.0).astype(np.float32)[..., None]
    y = raw.target.astype(np.int64)
    # The split is fixed by the data, not the run's seed, so every run tests on the same set.
    return Dataset(*split(x, y, config.test_fraction, seed=HOLDOUT_SEED), num_classes=10)


@DATASETS.register("synthetic")
def synthetic(config: DataConfig, seed: int) -> Dataset:
    """Gaussian inputs labelled by a random linear teacher: learnable, any shape, any size."""
    classes = config.classes or 10
    rng = np.random.default_rng(seed + 7919)
    x = rng.standard_normal((config.samples, *config.shape), dtype=np.float32)
    classes = config.classes or 10
    # The teacher reads at most the first TEACHER_FEATURES inputs, so that 224x224 images with
    # 1000 classes need a 32 MB teacher, not a 1.2 GB one.
    features = x.reshape(len(x), -1)[:, :TEACHER_FEATURES]
    teacher = rng.standard_normal((features.shape[1], classes))
    y = np.argmax(features @ teacher, axis=1).astype(np.int64)
    return Dataset(*split(x, y, config.test_fraction, seed=seed), num_classes=classes)
