"""The run's data set: a registered one (`data.name`), or the user's own from `data.builder`, a
function named by import path (hvdkit.models.builders.resolve), called as
`function(**data.args)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.config import DataConfig
from hvdkit.data.datasets import DATASETS, Dataset, split, to_source
from hvdkit.data.samples import DataSource
from hvdkit.errors import UserError
from hvdkit.models.builders import call_user, describe, resolve


def build_data(config: Any, seed: int, folder: str | Path | None = None) -> Any:
    """Call `data.builder` with `data.args`; return an `hvdkit.data.Dataset`.

    The builder may return a `Dataset`, (x_train, y_train, x_test, y_test), or (x, y), which
    is split by `data.test_fraction` with a fixed seed."""
    builder = resolve(config.builder, "data.builder", folder)
    value = call_user(builder, f"data.builder {config.builder!r}", **config.args)
    if isinstance(value, Dataset):
        return value
    if isinstance(value, tuple | list) and len(value) in (2, 4) and all(
            isinstance(v, np.ndarray) for v in value):
        arrays = split(*value, config.test_fraction, seed=1234) if len(value) == 2 else value
        x_train, y_train, x_test, y_test = arrays
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise UserError(f"data.builder {config.builder!r}: inputs and labels differ in "
                            f"length ({len(x_train)} and {len(y_train)} training samples, "
                            f"{len(x_test)} and {len(y_test)} test samples)")
        if not np.issubdtype(y_train.dtype, np.integer):
            raise UserError(f"data.builder {config.builder!r}: labels must be integers (class "
                            f"ids or token ids), got {y_train.dtype}")
        x_train, x_test = (x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
                           for x in (x_train, x_test))
        classes = int(max(y_train.max(), y_test.max())) + 1
        return Dataset(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                       num_classes=classes)
    raise UserError(f"data.builder {config.builder!r} returned {describe(value)}; return an "
                    "hvdkit.data.Dataset, (x_train, y_train, x_test, y_test) or (x, y) as "
                    "numpy arrays")


def build_dataset(config: DataConfig, seed: int, folder: str | None = None) -> Any:
    """The recipe's data set as its builder returns it: a registered one, or `data.builder`'s
    (looked for in `folder`, the recipe's, first; hvdkit.models.builders)."""
    if config.builder:
        return build_data(config, seed, folder)
    return DATASETS.get(config.name)(config, seed)


def build_source(config: DataConfig, seed: int, folder: str | None = None) -> DataSource:
    """The recipe's data set as a checked `DataSource`."""
    return to_source(build_dataset(config, seed, folder), config)
