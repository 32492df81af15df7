"""Checks made once, before any rank starts, so that a mistake is one line (exit 2) and not
one per rank between mpirun's boxes: the data files against the model, the builders, and a
precision this host's CPU would only emulate.
"""

from __future__ import annotations

from typing import Any

from hvdkit.config import Recipe
from hvdkit.data.checks import FILE_SOURCES, check_model_fits
from hvdkit.models.builders import call_model_builder, quiet_stderr, resolve
from hvdkit.runtime.cpu_precision import check_cpu_precision, train_on_cpu


def check_data(recipe: Recipe) -> None:
    """Open and check a file source and check it fits the model (before any worker starts)."""
    if recipe.data.name not in FILE_SOURCES:
        return
    from hvdkit.data.builder import build_source

    data = build_source(recipe.data, recipe.train.seed)
    check_model_fits(recipe.model.name, data)
    data.close()


def check_precision(recipe: Recipe, multi_host: bool, source: str) -> None:
    """train.precision bf16 / fp16 where the ranks would train on this CPU, which lacks it
    (hvdkit.runtime.cpu_precision): refused unless train.precision_force."""
    train = recipe.train
    check_cpu_precision(train.precision, train.precision_force,
                        train_on_cpu(train.device, multi_host), source)


def check_builders(recipe: Any, framework: str, call: bool = True) -> None:
    """Import the recipe's builders and, with `call`, call them once and check what they
    return, so that a bad one fails before any worker starts, in one line. No framework is
    imported for the check (a model's type is read from its classes' modules; a factory in
    a builder's dict is left to the ranks), and what the builders' own imports print (a
    framework's start-up lines) is held back: the ranks print it again. Launchers call; a
    process that trains itself only imports (its framework must start after Horovod)."""
    model, data = recipe.model, recipe.data
    with quiet_stderr():
        for key, spec in (("model.builder", model.builder), ("data.builder", data.builder)):
            if spec:
                resolve(spec, key, recipe.folder)
    if not call or not (model.builder or data.builder):
        return
    from hvdkit.data.builder import build_dataset
    from hvdkit.models.usermodel import check_model_kind, model_input_shape

    with quiet_stderr():
        dataset = build_dataset(data, recipe.train.seed, recipe.folder)
        if model.builder:
            shape = model_input_shape(dataset.input_shape, model.channels_first, framework)
            built = call_model_builder(model, framework, shape, dataset.num_classes,
                                       recipe.folder)
    if model.builder:
        check_model_kind(built, framework, f"model.builder {model.builder!r}")
