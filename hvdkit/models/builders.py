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
raises, or returns the wrong type, is a one-line `UserError` (exit 2); `hvdkit train` calls
both once before it launches workers (hvdkit.launch.preflight.check_builders). Framework-free:
the adapter checks a model's type.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def call_user(function: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, a user's builder or factory: an exception it raises is a
    one-line UserError naming `what` and the line that raised, not a traceback per rank."""
    try:
        return function(*args, **kwargs)
    except UserError:
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        raise UserError(f"{what} failed{where}: {type(exc).__name__}: {_first_line(exc)}") \
            from None


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hold back what this process writes to stderr, a framework's start-up lines from C++
    included (file descriptor 2): a builder checked before launch imports its framework, and
    runs again, with its output, in every rank."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def call_model_builder(config: Any, framework: str, input_shape: tuple[int, ...],
                       num_classes: int, folder: str | Path | None = None) -> Any:
    """Call `model.builder`; return what it built for `framework` (a dict's entry)."""
    builder = resolve(config.builder, "model.builder", folder)
    value = call_user(builder, f"model.builder {config.builder!r}", tuple(input_shape),
                      num_classes, **config.args)
    if isinstance(value, dict):
        if framework not in value:
            raise UserError(f"model.builder {config.builder!r} returned a dict without a "
                            f"{framework!r} model (keys: {', '.join(map(str, value))})")
        value = value[framework]
    return value


def describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        kinds = ", ".join(type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({kinds})"
    return f"a {type(value).__module__}.{type(value).__name__}"
