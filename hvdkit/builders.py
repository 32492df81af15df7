"""Your own model and data in a recipe: builders named by import path.

    model: {builder: "mymodels:small_cnn", args: {width: 32}}   # mymodels.py beside the recipe
    data:  {builder: "mydata:load", args: {rows: 5000}}

A builder is imported from the recipe's folder first, then from PYTHONPATH (`sys.path`).
Every rank loads the recipe and imports the builder itself; `hvdkit train` also puts the
recipe's folder first on the launched job's PYTHONPATH, so the ranks on other hosts find the
module too (the folder must exist there, as the recipe file must), and a script run under
someone else's `horovodrun`/`mpirun`/`srun` resolves it the same way.

The model builder is called as `function(input_shape, num_classes, **args)` and returns an
`nn.Module` or a `keras.Model`, or a dict with one per framework, whose entries may also be
factories `(input_shape, num_classes) -> model` (so that a module serving both frameworks
imports only the run's); the data builder as
`function(**args)`, returning a `Dataset` or numpy arrays. A builder that cannot be imported,
or returns the wrong type, is a one-line `UserError`; `hvdkit train` calls both once before
it launches workers (`check_builders`). Framework-free: the adapter checks a model's type.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.errors import UserError


def add_to_path(folder: str | Path | None) -> None:
    """Make modules in `folder` (a recipe's folder) importable, ahead of PYTHONPATH."""
    if folder is None:
        return
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def resolve(spec: str, key: str, folder: str | Path | None = None) -> Callable[..., Any]:
    """The callable `spec` ("package.module:function") names; `key` names the recipe field."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UserError(f"{key} {spec!r} must name a function as \"package.module:function\"")
    add_to_path(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or an error while importing it
        where = f" (looked in {Path(folder).resolve()} and PYTHONPATH)" if folder else ""
        raise UserError(f"{key} {spec!r}: cannot import {module_name}{where}: "
                        f"{type(exc).__name__}: {_first_line(exc)}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UserError(f"{key} {spec!r}: module {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{key} {spec!r} is a {type(target).__name__}, not a function")
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def build_data(config: Any, seed: int, folder: str | Path | None = None) -> Any:
    """Call `data.builder` with `data.args`; return an `hvdkit.data.Dataset`.

    The builder may return a `Dataset`, (x_train, y_train, x_test, y_test), or (x, y), which
    is split by `data.test_fraction` with a fixed seed."""
    from hvdkit.data.datasets import Dataset, split

    builder = resolve(config.builder, "data.builder", folder)
    value = builder(**config.args)
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
    raise UserError(f"data.builder {config.builder!r} returned {_describe(value)}; return an "
                    "hvdkit.data.Dataset, (x_train, y_train, x_test, y_test) or (x, y) as "
                    "numpy arrays")


def call_model_builder(config: Any, framework: str, input_shape: tuple[int, ...],
                       num_classes: int, folder: str | Path | None = None) -> Any:
    """Call `model.builder`; return what it built for `framework` (a dict's entry)."""
    builder = resolve(config.builder, "model.builder", folder)
    value = builder(tuple(input_shape), num_classes, **config.args)
    if isinstance(value, dict):
        if framework not in value:
            raise UserError(f"model.builder {config.builder!r} returned a dict without a "
                            f"{framework!r} model (keys: {', '.join(map(str, value))})")
        value = value[framework]
    return value


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        kinds = ", ".join(type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({kinds})"
    return f"a {type(value).__module__}.{type(value).__name__}"


def check_builders(recipe: Any, framework: str, call: bool = True) -> None:
    """Import the recipe's builders and, with `call`, call them once and check what they
    return, so that a bad one fails before any worker starts. Calling the model builder
    imports the framework here (to check the model's type): launchers call, while a process
    that trains itself only imports (its framework must start after Horovod)."""
    model, data = recipe.model, recipe.data
    for key, spec in (("model.builder", model.builder), ("data.builder", data.builder)):
        if spec:
            resolve(spec, key, recipe.folder)
    if not call or not (model.builder or data.builder):
        return
    from hvdkit.adapters.base import load_framework
    from hvdkit.data.datasets import build_dataset
    from hvdkit.usermodel import model_input_shape

    dataset = build_dataset(data, recipe.train.seed, recipe.folder)
    if model.builder:
        shape = model_input_shape(dataset.input_shape, model.channels_first)
        built = call_model_builder(model, framework, shape, dataset.num_classes, recipe.folder)
        load_framework(framework).usermodel.as_model(
            built, shape, dataset.num_classes, f"model.builder {model.builder!r}")
