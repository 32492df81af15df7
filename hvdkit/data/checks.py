"""Checks of the data against the recipe, each a one-line UserError naming what to fix.

`check_data_config` runs with every recipe load (fields only, no file opened);
`check_data` opens a file source's data and checks it against the model, once, before any
worker starts (the CLI); `check_model_fits` is what the trainer runs before it builds a model.
"""

from __future__ import annotations

from hvdkit.config import DataConfig
from hvdkit.data.samples import DataSource
from hvdkit.errors import UserError

IMAGE_SOURCES = ("images", "webdataset")
FILE_SOURCES = ("npy", "text", "tokens", *IMAGE_SOURCES)
TOKEN_SOURCES = ("text", "tokens")
MIN_IMAGE_SIZE = 32
MAX_VOCAB = 2**16  # uint16 token ids

MODEL_INPUTS: dict[str, tuple[str, int | None]] = {
    "mlp": ("classification", None),
    "cnn": ("classification", 3),
    "resnet": ("classification", 3),
    "gpt": ("language_model", 1),
}
"""Built-in model -> (the task it is for, the sample dimensions it needs, None: any).
A model not listed here is not checked."""


def check_data_config(config: DataConfig, source: str) -> None:
    """Field checks of the recipe's data section."""
    for key in ("classes", "block_size", "vocab_size", "workers", "prefetch"):
        if getattr(config, key) < 0:
            raise UserError(f"{source}: data.{key} must not be negative, "
                            f"got {getattr(config, key)}")
    if config.name in FILE_SOURCES and not config.path:
        raise UserError(f"{source}: data.path is required for data set {config.name}")
    for key in ("path", "val_path"):
        if isinstance(getattr(config, key), list) and config.name != "webdataset":
            raise UserError(f"{source}: data.{key} is a list, which only data set webdataset "
                            f"takes (shards); give one path")
    if config.name in IMAGE_SOURCES:
        if config.image_size < MIN_IMAGE_SIZE:
            raise UserError(f"{source}: data.image_size must be at least {MIN_IMAGE_SIZE} "
                            f"pixels, got {config.image_size}")
        if config.shard_group < 0:
            raise UserError(f"{source}: data.shard_group must not be negative, "
                            f"got {config.shard_group}")
        if not 0 <= config.unreadable_limit < 1:
            raise UserError(f"{source}: data.unreadable_limit is a share of the images, in "
                            f"[0, 1); got {config.unreadable_limit}")
    if config.name in TOKEN_SOURCES and config.block_size < 1:
        raise UserError(f"{source}: data.block_size is required for data set {config.name} "
                        f"(tokens per window)")
    if config.name == "tokens" and not 1 <= config.vocab_size <= MAX_VOCAB:
        raise UserError(f"{source}: data.vocab_size must lie in [1, {MAX_VOCAB}] for uint16 "
                        f"token ids, got {config.vocab_size}")


def check_model_fits(model: str, data: DataSource) -> None:
    """The recipe's built-in model can take the data's task and sample shape."""
    if model not in MODEL_INPUTS:
        return
    task, dims = MODEL_INPUTS[model]
    if data.task != task:
        raise UserError(f"model {model} is for {task} but the data set is for "
                        f"{data.task.replace('_', ' ')}")
    if dims is not None and len(data.input_shape) != dims:
        raise UserError(f"model {model} takes samples of {dims} dimensions (height, width, "
                        f"channels) but the data's samples have shape {data.input_shape}")
