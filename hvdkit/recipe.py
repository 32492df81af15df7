"""Recipes: one YAML file names a model, data, optimizer and parallel layout for both frameworks.

Loading is strict: an unknown key, a wrong type or a missing field raises `UserError` naming the
file and the field. `--set key=value` overrides are applied before validation, so they get the
same checks. `Recipe.to_dict()` is what every run saves as its resolved recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from hvdkit.errors import UserError


@dataclass
class ModelConfig:
    name: str = ""
    """Built-in model: `mlp`, `cnn`, `resnet` or `gpt` (hvdkit/models.py); empty with `builder`."""
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    """Widths of the fully connected hidden layers (mlp, cnn)."""
    channels: list[int] = field(default_factory=lambda: [16, 32])
    """Output channels of each 3x3 convolution (cnn only)."""
    depth: int = 18
    """ResNet depth: 18, 34 (basic blocks), 50, 101, 152 (bottleneck blocks)."""
    stem: Literal["imagenet", "small"] = "imagenet"
    """ResNet stem: `imagenet` (7x7 stride-2 convolution and 3x3 max-pooling, for 224x224
    images) or `small` (one 3x3 stride-1 convolution, no pooling, for 32x32 images)."""
    width: int = 64
    """resnet: channels of the first stage (64 in the paper; each stage doubles them);
    gpt: the embedding width (divisible by heads)."""
    layers: int = 4
    """gpt: transformer blocks."""
    heads: int = 4
    """gpt: attention heads per block."""
    block_size: int = 128
    """gpt: the longest context in tokens (the size of the position table)."""
    dropout: float = 0.0
    """gpt: dropout after the embeddings, on the attention weights and after each residual
    branch (0: none, which keeps runs comparable across ranks and frameworks)."""
    builder: str = ""
    """Your own model instead of `name`: "package.module:function", imported from the
    recipe's folder or PYTHONPATH and called as `function(input_shape, num_classes, **args)`;
    it returns an `nn.Module` or a `keras.Model` for the run's framework, or a dict
    {"torch": ..., "tensorflow": ...} of models or of factories (input_shape, num_classes)
    -> model, so that one module serves both frameworks and imports only the run's."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `builder`."""
    channels_first: bool = False
    """Hand image batches to the model as (N, C, H, W), as PyTorch's convolutions expect, not
    as stored, (N, H, W, C). For your own PyTorch models; the built-in ones work either way."""
    output: Literal["auto", "logits", "probabilities"] = "auto"
    """What a classifier's outputs are: `logits`, or `probabilities` (it ends in a softmax;
    hvdkit then takes their log as logits, so the loss stays cross-entropy). `auto` looks at
    the first batch's outputs: rows of non-negative numbers summing to 1 are probabilities."""


@dataclass
class DataConfig:
    name: str = ""
    """Registered data set: `digits` (scikit-learn's 8x8 digits), `synthetic`, or one read
    from disk: `npy` (a folder of .npy arrays), `text` (a UTF-8 file, byte tokens), `tokens`
    (a flat file of uint16 token ids); empty with `builder`."""
    path: str = ""
    """npy: the folder holding x_train.npy, y_train.npy and optionally x_test.npy, y_test.npy;
    text, tokens: the file. Read a batch at a time, never whole."""
    test_fraction: float = 0.2
    """Share of the samples held out as the test set (npy without test files: a fixed random
    share; text, tokens: the file's tail)."""
    samples: int = 4096
    """Number of samples (synthetic only)."""
    shape: list[int] = field(default_factory=lambda: [8, 8, 1])
    """Shape of one sample, channels last (synthetic only)."""
    classes: int = 0
    """Number of classes; labels must lie in [0, classes). 0: synthetic makes 10; npy and
    arrays of your own take the largest training label + 1; a map-style data set of your own
    needs it (or a `num_classes` attribute)."""
    block_size: int = 0
    """Tokens per input window (text, tokens); the targets are the next block_size tokens."""
    vocab_size: int = 0
    """Token ids lie in [0, vocab_size) (tokens; text is bytes, 256)."""
    workers: int = 0
    """Processes decoding a map-style data set's samples ahead (0: the prefetch thread
    decodes them)."""
    prefetch: int = 2
    """Batches prepared ahead in a background thread: gathered, converted and, on a GPU,
    copied to the device (0: prepared in the step's thread)."""
    drop_last: bool = True
    """Drop the last global batch of an epoch when it is incomplete (training only)."""
    builder: str = ""
    """Your own data instead of `name`: "package.module:function", imported from the recipe's
    folder or PYTHONPATH and called as `function(**args)` on every rank; it returns an
    `hvdkit.data.Dataset` or a tuple (x_train, y_train, x_test, y_test) of numpy arrays."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `builder`."""


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam"]
    """Optimizer."""
    lr: float = 0.01
    """Base learning rate, for one worker."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """L2 weight decay."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    """Learning-rate schedule after warm-up."""
    step_every_epochs: int = 10
    """Epochs between decays (schedule: step)."""
    step_gamma: float = 0.1
    """Decay factor (schedule: step)."""
    scale_by_world: bool = False
    """Multiply lr by the number of data-parallel workers (the linear scaling rule)."""
    warmup_epochs: float = 0.0
    """Epochs over which lr ramps linearly up to its (scaled) value."""


@dataclass
class TrainConfig:
    batch_size: int = 32
    """Samples per rank per backward pass (one micro-batch when accumulating)."""
    epochs: int = 1
    """Passes over the training set."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit)."""
    seed: int = 0
    """Seed of the initial weights and of the data order, the same on every rank."""
    eval_every_epochs: int = 1
    """Evaluate on the test set every this many epochs (and always at the end)."""
    log_every_steps: int = 10
    """Average metrics across ranks and log them every this many steps."""
    threads: int = 0
    """Intra-op threads per rank (0: the cores divided by the ranks on the host)."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Where each rank trains: auto (its own GPU when the host has GPUs, else the CPU), cpu, or
    gpu (an error without one). Rank i on a host takes GPU i."""
    timing_warmup_steps: int = 2
    """Steps before the barrier-timed throughput window opens (tracing, allocations)."""
    checkpoint_every_steps: int = 0
    """Write a checkpoint every this many optimizer steps (0: only at the end of training).
    Checkpoints go to <run dir>/checkpoints; a run without a run folder writes none."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    commit_every_steps: int = 10
    """Elastic runs: commit the state in memory every this many steps (a lost worker costs at
    most this many steps of repeated work)."""


@dataclass
class ParallelConfig:
    reduction: Literal["average", "sum", "adasum"] = "average"
    """How Horovod combines the ranks' gradients."""
    compression: Literal["none", "fp16", "powersgd"] = "none"
    """Gradient compression on the wire: fp16 halves; powersgd sends low-rank factors of each
    weight matrix with error feedback (hvdkit.parallel.powersgd)."""
    powersgd_rank: int = 2
    """Rank of PowerSGD's factors (compression: powersgd)."""
    powersgd_warmup_steps: int = 10
    """Optimizer steps exchanged uncompressed before PowerSGD starts (compression: powersgd)."""
    accumulation: int = 1
    """Backward passes per optimizer step (gradient accumulation)."""
    sync: Literal["allreduce", "ps", "zero1"] = "allreduce"
    """Gradient exchange: Horovod's ring-allreduce, a parameter server on rank 0 (mpi4py), or
    zero1: reduce-scatter, each rank steps the optimizer on its shard of the parameters and
    holds only that shard's state, all-gather (hvdkit.parallel.zero)."""
    stages: int = 1
    """Pipeline stages, one rank each; world size = stages x data-parallel degree."""
    microbatches: int = 1
    """Micro-batches per batch in a pipeline (train.batch_size must divide by it)."""
    schedule: Literal["gpipe", "1f1b", "interleaved", "zb-h1"] = "1f1b"
    """Pipeline schedule: all forwards then all backwards, one-forward-one-backward, 1F1B over
    `virtual_stages` chunks per stage, or zero-bubble ZB-H1 (backward split into the input's
    gradient, sent at once, and the weights', deferred into idle slots)."""
    virtual_stages: int = 1
    """Chunks per stage for schedule interleaved: the model is cut into stages x this many
    chunks and stage s holds chunks s, s + stages, ... (microbatches a multiple of stages)."""
    split: Literal["params", "time"] = "params"
    """Balanced cut of the layers into stages: by parameter count, or by each layer's measured
    forward and backward time on one micro-batch."""
    boundaries: list[int] = field(default_factory=list)
    """Explicit cut instead: the first layer (0-based, layers with parameters) of each stage
    after the first, e.g. [2] for 2 stages."""
    placement: list[str] = field(default_factory=list)
    """A device per model part (cpu, cuda:i / /CPU:0, /GPU:i); see hvdkit.parallel.placement."""


@dataclass
class Recipe:
    model: ModelConfig
    data: DataConfig
    optimizer: OptimizerConfig
    name: str = "run"
    """Name of the recipe; the default run folder starts with it."""
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    folder: ClassVar[str | None] = None
    """The recipe file's folder, where model and data builders are looked for first (set by
    `load_recipe`; not a recipe field)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of the resolved recipe, to tell checkpoints of other recipes apart."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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
        return None if value is None else _coerce(args[0], value, source, key)
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
    }
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"{source}: {key} must not be negative, got {value}")
    from hvdkit.layout import ParallelLayout  # the parallel fields' rules, in one place
    from hvdkit.models import check_model

    check_model(recipe.model, source)
    ParallelLayout.from_recipe(recipe, source=source)
    if recipe.optimizer.lr <= 0:
        raise UserError(f"{source}: optimizer.lr must be positive, got {recipe.optimizer.lr}")
    if not 0 < recipe.data.test_fraction < 1:
        raise UserError(f"{source}: data.test_fraction must lie between 0 and 1")
    from hvdkit.data.datasets import DATASETS  # here: the data sets import this module

    if bool(recipe.data.name) == bool(recipe.data.builder):
        raise UserError(f"{source}: the data section needs exactly one of data.name (a "
                        "registered data set) and data.builder (\"package.module:function\")")
    if recipe.data.args and not recipe.data.builder:
        raise UserError(f"{source}: data.args are the arguments of data.builder; "
                        "set data.builder or remove data.args")
    if recipe.data.name and recipe.data.name not in DATASETS:
        raise UserError(f"{source}: unknown data set {recipe.data.name!r}; "
                        f"valid: {', '.join(DATASETS.names())}")
    from hvdkit.data.checks import check_data_config

    check_data_config(recipe.data, source)
