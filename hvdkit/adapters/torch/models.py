"""PyTorch model builders, one per recipe model name. resnet.py and gpt.py register theirs here.

Images arrive channels last (N, H, W, C) and the built-in models turn them (`ChannelsFirst`),
or channels first (N, C, H, W) with model.channels_first, as PyTorch's own models expect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hvdkit.config import ModelConfig
from hvdkit.models.registry import Registry

MODELS: Registry = Registry("model")


def _dense_head(in_features: int, hidden: list[int], num_classes: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return [*layers, nn.Linear(in_features, num_classes)]


@MODELS.register("mlp")
def mlp(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), *_dense_head(math.prod(input_shape), config.hidden,
                                                    num_classes))


def to_channels_first(x: torch.Tensor,
                      memory_format: torch.memory_format = torch.contiguous_format
                      ) -> torch.Tensor:
    """(N, H, W, C) → (N, C, H, W), stored in `memory_format`: contiguous NCHW unless
    channels-last is asked for. Never a permuted view: oneDNN's CPU convolutions take an
    NHWC-strided input as channels-last, which walks into uxlfoundation/oneDNN#6035
    (hvdkit.adapters.torch.precision.known_bad_convolutions)."""
    return x.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


class ChannelsFirst(nn.Module):
    """(N, H, W, C) → (N, C, H, W), so that both frameworks read the same arrays; the memory
    format is the model's (`precision.prepare` sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.memory_format = torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels_first(x, self.memory_format)


@MODELS.register("cnn")
def cnn(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if config.channels_first:
        channels, height, width = input_shape
        layers: list[nn.Module] = []
    else:
        height, width, channels = input_shape
        layers = [ChannelsFirst()]
    for out in config.channels:
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU()]
        if min(height, width) >= 4:  # pool while the map is large enough
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out
    layers.append(nn.Flatten())
    layers += _dense_head(channels * height * width, config.hidden, num_classes)
    return nn.Sequential(*layers)
