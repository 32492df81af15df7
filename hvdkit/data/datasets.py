"""Registered data sets. Each builder returns numpy arrays: images channels last, int64 labels.

Add one with `@DATASETS.register("name")` on a function `(config, seed) -> Dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvdkit.recipe import DataConfig
from hvdkit.registry import Registry


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DATASETS: Registry = Registry("data set")
TEACHER_FEATURES = 4096


def build_dataset(config: DataConfig, seed: int, folder: str | None = None) -> Dataset:
    """The recipe's data set: a registered one, or `data.builder`'s (looked for in `folder`,
    the recipe's, first; hvdkit.builders)."""
    if config.builder:
        from hvdkit.builders import build_data

        return build_data(config, seed, folder)
    return DATASETS.get(config.name)(config, seed)


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
    return Dataset(*split(x, y, config.test_fraction, seed=1234), num_classes=10)


@DATASETS.register("synthetic")
def synthetic(config: DataConfig, seed: int) -> Dataset:
    """Gaussian inputs labelled by a random linear teacher: learnable, any shape, any size."""
    rng = np.random.default_rng(seed + 7919)
    x = rng.standard_normal((config.samples, *config.shape), dtype=np.float32)
    # The teacher reads at most the first TEACHER_FEATURES inputs, so that 224x224 images with
    # 1000 classes need a 32 MB teacher, not a 1.2 GB one.
    features = x.reshape(len(x), -1)[:, :TEACHER_FEATURES]
    teacher = rng.standard_normal((features.shape[1], config.classes))
    y = np.argmax(features @ teacher, axis=1).astype(np.int64)
    return Dataset(*split(x, y, config.test_fraction, seed=seed), num_classes=config.classes)
