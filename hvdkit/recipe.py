"""Recipes: one YAML file names a model, data, optimizer and parallel layout for both frameworks.

Loading is strict: an unknown key, a wrong type or a missing field raises `UserError` naming the
file and the field. `--set key=value` overrides are applied before validation, so they get the
same checks. `Recipe.to_dict()` is what every run saves as its resolved recipe.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from hvdkit.config import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    Recipe,
    TrainConfig,
)
from hvdkit.data.checks import check_data_config
from hvdkit.data.datasets import DATASETS
from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.models.catalogue import check_model

__all__ = ["DataConfig", "ModelConfig", "OptimizerConfig", "ParallelConfig", "Recipe",
           "TrainConfig", "load_recipe", "recipe_from_dict"]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply `key=value` overrides, validate, and return it typed."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"recipe {path} does not exist")
    if not path.is_file():
        raise UserError(f"recipe {path} is not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except (UnicodeDecodeError, OSError) as exc:  # a binary file, a folder, no permission
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise UserError(f"recipe {path} cannot be read as YAML text ({why})") from None
    recipe = recipe_from_dict(data or {}, source=str(path), overrides=overrides)
    recipe.folder = str(path.resolve().parent)  # type: ignore[misc]
    return recipe


def recipe_from_dict(
    data: dict[str, Any], source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()
) -> Recipe:
    """Build a validated `Recipe` from plain data (a parsed YAML file, or a test's dict)."""
    data = json.loads(json.dumps(data))  # a deep copy that the overrides may change
    for item in overrides:
        _apply_override(data, item, source)
    recipe = _build(Recipe, data, source, "")
    _check(recipe, source)
    return recipe


def _apply_override(data: dict[str, Any], item: str, source: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set {item!r}: expected key=value, e.g. optimizer.lr=0.1")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {item!r}: {part} is not a section of {source}")
    node[parts[-1]] = yaml.safe_load(raw) if raw else ""


def _build(cls: type, data: Any, source: str, where: str) -> Any:
    label = where or "the recipe"
    if not isinstance(data, dict):
        raise UserError(f"{source}: {label} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise UserError(
            f"{source}: unknown key {key!r}; valid keys here: {', '.join(fields)}"
        )
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{source}: missing required field {key!r}")
            continue
        values[name] = _coerce(hints[name], data[name], source, key)
    return cls(**values)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise UserError(
                f"{source}: {key} must be one of {', '.join(map(str, choices))}; got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        for arg in args[:-1]:  # the first type that takes the value; else the last's error
            try:
                return _coerce(arg, value, source, key)
            except UserError:
                continue
        return _coerce(args[-1], value, source, key)
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{source}: {key} must be a mapping of names to values, "
                            f"got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise UserError(f"{source}: {key} must be {names.get(hint, hint)}, got {value!r}")


def _check(recipe: Recipe, source: str) -> None:
    """Cross-field and range checks; each message names the field to fix."""
    positive = {
        "train.batch_size": recipe.train.batch_size,
        "train.epochs": recipe.train.epochs,
        "train.eval_every_epochs": recipe.train.eval_every_epochs,
        "train.log_every_steps": recipe.train.log_every_steps,
        "train.keep_checkpoints": recipe.train.keep_checkpoints,
        "train.commit_every_steps": recipe.train.commit_every_steps,
        "optimizer.step_every_epochs": recipe.optimizer.step_every_epochs,
        "data.samples": recipe.data.samples,
    }
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{source}: {key} must be at least 1, got {value}")
    non_negative = {
        "train.max_steps": recipe.train.max_steps,
        "train.threads": recipe.train.threads,
        "train.timing_warmup_steps": recipe.train.timing_warmup_steps,
        "train.checkpoint_every_steps": recipe.train.checkpoint_every_steps,
        "optimizer.momentum": recipe.optimizer.momentum,
        "optimizer.weight_decay": recipe.optimizer.weight_decay,
        "optimizer.warmup_epochs": recipe.optimizer.warmup_epochs,
        "optimizer.clip_norm": recipe.optimizer.clip_norm,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"{source}: {key} must not be negative, got {value}")
    if recipe.train.loss_scale <= 0 or recipe.train.loss_scale_growth_steps < 1:
        raise UserError(f"{source}: train.loss_scale must be positive and "
                        "train.loss_scale_growth_steps at least 1")
    check_model(recipe.model, source)
    ParallelLayout.from_recipe(recipe, source=source)
    if recipe.optimizer.name == "lamb" and recipe.parallel.sync == "zero1":
        raise UserError(f"{source}: optimizer.name lamb scales each tensor by its own norms, "
                        "which ZeRO-1's shards cut apart; set parallel.sync allreduce or use "
                        "optimizer.name adamw")
    if recipe.model.sync_batchnorm and recipe.parallel.stages > 1:
        raise UserError(f"{source}: model.sync_batchnorm is not supported in a pipeline "
                        "(parallel.stages > 1); set it false")
    if recipe.optimizer.lr <= 0:
        raise UserError(f"{source}: optimizer.lr must be positive, got {recipe.optimizer.lr}")
    ignored = recipe.optimizer.ignored()
    if ignored:
        key, chooser, users = ignored[0]
        chosen = getattr(recipe.optimizer, chooser)
        raise UserError(f"{source}: optimizer.{key} is read only by optimizer.{chooser} "
                        f"{' or '.join(users)}, and would be ignored with {chosen}; remove it "
                        f"or set optimizer.{chooser} {users[0]}")
    if not 0 < recipe.data.test_fraction < 1:
        raise UserError(f"{source}: data.test_fraction must lie between 0 and 1")
    if bool(recipe.data.name) == bool(recipe.data.builder):
        raise UserError(f"{source}: the data section needs exactly one of data.name (a "
                        "registered data set) and data.builder (\"package.module:function\")")
    if recipe.data.args and not recipe.data.builder:
        raise UserError(f"{source}: data.args are the arguments of data.builder; "
                        "set data.builder or remove data.args")
    if recipe.data.name and recipe.data.name not in DATASETS:
        raise UserError(f"{source}: unknown data set {recipe.data.name!r}; "
                        f"valid: {', '.join(DATASETS.names())}")
    check_data_config(recipe.data, source)
