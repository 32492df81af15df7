"""The built-in models, by recipe name, and what both frameworks' builders share.

The catalogue is framework-free so that a recipe's model is checked before any worker (or
framework) starts; `tests/unit` checks that every adapter builds every name, and that the
two frameworks' ResNets and GPTs have equal parameter counts. Each adapter registers one
builder per name (`hvdkit/adapters/<framework>/models.py`, `resnet.py`, `gpt.py`).
"""

from __future__ import annotations

from typing import Any

from hvdkit.errors import UserError

MODEL_NAMES = {
    "mlp": "fully connected layers (model.hidden) on the flattened input",
    "cnn": "3x3 convolutions (model.channels), 2x2 max-pooling while the map is >= 4 wide, "
           "then fully connected layers (model.hidden)",
    "resnet": "ResNet v1.5 (model.depth 18|34|50|101|152, model.stem imagenet|small, "
              "model.width channels in the first stage)",
    "gpt": "decoder-only transformer on token ids: token and position embeddings, "
           "model.layers pre-norm blocks (model.heads, model.width), tied output head",
}

RESNET_BLOCKS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
"""ResNet depth → block kind and blocks per stage (He et al. 2016, table 1)."""

EXPANSION = {"basic": 1, "bottleneck": 4}
"""Output channels of a block ÷ its inner width."""


def resnet_stages(depth: int, width: int) -> list[tuple[int, int, int]]:
    """Per block, in order: (inner width, output channels, stride)."""
    kind, counts = RESNET_BLOCKS[depth]
    blocks = []
    for stage, count in enumerate(counts):
        inner = width * 2**stage
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append((inner, inner * EXPANSION[kind], stride))
    return blocks


def gpt_parameters(layers: int, width: int, block_size: int, vocab: int) -> int:
    """The GPT's parameter count: embeddings, blocks, final norm (the head is tied)."""
    block = 2 * (2 * width) + (3 * width * width + 3 * width) + (width * width + width) \
        + (4 * width * width + 4 * width) + (4 * width * width + width)
    return vocab * width + block_size * width + layers * block + 2 * width


def layer_count(config: Any) -> int | None:
    """Top-level layers with parameters in a built-in model: what a pipeline can cut
    (None for a model the recipe does not describe, e.g. a builder's)."""
    if config.builder:
        return None
    if config.name == "mlp":
        return len(config.hidden) + 1
    if config.name == "cnn":
        return len(config.channels) + len(config.hidden) + 1
    if config.name == "resnet" and config.depth in RESNET_BLOCKS:
        return 1 + sum(RESNET_BLOCKS[config.depth][1]) + 1  # stem, blocks, head
    if config.name == "gpt":
        return 1 + config.layers + 1  # embeddings, blocks, final norm with the tied head
    return None


def check_model(config: Any, source: str) -> None:
    """The model section's own rules, each a one-line UserError naming the field."""
    if bool(config.name) == bool(config.builder):
        raise UserError(f"{source}: the model section needs exactly one of model.name (a "
                        "built-in model) and model.builder (\"package.module:function\")")
    if config.args and not config.builder:
        raise UserError(f"{source}: model.args are the arguments of model.builder; "
                        "set model.builder or remove model.args")
    if config.builder:
        return
    if config.name not in MODEL_NAMES:
        raise UserError(f"{source}: unknown model {config.name!r}; "
                        f"valid: {', '.join(MODEL_NAMES)}")
    if any(w < 1 for w in config.hidden + config.channels):
        raise UserError(f"{source}: model.hidden and model.channels must be positive widths")
    if config.name == "resnet" and config.depth not in RESNET_BLOCKS:
        raise UserError(f"{source}: model.depth must be one of "
                        f"{', '.join(map(str, RESNET_BLOCKS))} for resnet; got {config.depth}")
    for key in ("width", "layers", "heads", "block_size"):
        if getattr(config, key) < 1:
            raise UserError(f"{source}: model.{key} must be at least 1, "
                            f"got {getattr(config, key)}")
    if config.name == "gpt" and config.width % config.heads:
        raise UserError(f"{source}: model.width {config.width} must divide by model.heads "
                        f"{config.heads} (each head takes width / heads channels)")
    if not 0 <= config.dropout < 1:
        raise UserError(f"{source}: model.dropout must lie in [0, 1), got {config.dropout}")


def check_images(input_shape: tuple[int, ...]) -> None:
    """A ResNet's data must be images."""
    if len(input_shape) != 3:
        raise UserError(f"model resnet needs images (height, width, channels); the data's "
                        f"samples have shape {tuple(input_shape)}")


def check_sequences(config: Any, input_shape: tuple[int, ...]) -> None:
    """A GPT's data must be token sequences that fit its position table."""
    if len(input_shape) != 1:
        raise UserError(f"model gpt needs sequences of token ids; the data's samples have "
                        f"shape {tuple(input_shape)} (use a text or tokens data set)")
    if input_shape[0] > config.block_size:
        raise UserError(f"the data's sequences have {input_shape[0]} tokens, more than "
                        f"model.block_size {config.block_size}; raise model.block_size")
