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


class ChannelsFirst(nn.Module):
    """(N, H, W, C) → (N, C, H, W), so that both frameworks read the same arrays."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


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
