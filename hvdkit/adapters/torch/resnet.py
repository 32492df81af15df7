"""ResNet v1.5 in PyTorch (the torchvision layout: stride on the 3x3 convolution), the same
architecture and parameter count as hvdkit/adapters/tensorflow/resnet.py.

The model's top-level children are what a pipeline cuts: the stem, each residual block, and
the head (global average pooling and the classifier), so `children()` gives 1 + blocks + 1
layers with parameters. Convolutions have no bias (batch norm follows); weights are He-normal
(fan out), as in torchvision; the classifier is torch's default Linear.
"""

from __future__ import annotations

import torch
from torch import nn

from hvdkit.adapters.torch.models import MODELS, ChannelsFirst
from hvdkit.config import ModelConfig
from hvdkit.models.catalogue import RESNET_BLOCKS, check_images, resnet_stages

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # torch's convention; Keras' momentum is 1 − this


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layer


def norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Stem(nn.Module):
    """imagenet: 7x7/2 convolution, norm, ReLU, 3x3/2 max-pool; small: 3x3/1, norm, ReLU."""

    def __init__(self, c_in: int, width: int, stem: str) -> None:
        super().__init__()
        imagenet = stem == "imagenet"
        self.conv = conv(c_in, width, 7 if imagenet else 3, 2 if imagenet else 1)
        self.bn = norm(width)
        self.pool = nn.MaxPool2d(3, 2, padding=1) if imagenet else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class Block(nn.Module):
    """A residual block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1), with a projection
    shortcut (1x1 convolution and norm) where the shape changes."""

    def __init__(self, kind: str, c_in: int, inner: int, c_out: int, stride: int) -> None:
        super().__init__()
        if kind == "basic":
            convs = [conv(c_in, inner, 3, stride), conv(inner, c_out, 3)]
        else:
            convs = [conv(c_in, inner, 1), conv(inner, inner, 3, stride), conv(inner, c_out, 1)]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norm(c.out_channels) for c in convs)
        self.shortcut = (nn.Sequential(conv(c_in, c_out, 1, stride), norm(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, (c, n) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = n(c(y))
            if i < len(self.convs) - 1:
                y = torch.relu(y)
        return torch.relu(y + self.shortcut(x))


class Head(nn.Module):
    """Global average pooling and the classifier."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@MODELS.register("resnet")
def resnet(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Images (N, H, W, C), or (N, C, H, W) with model.channels_first, to class logits."""
    check_images(input_shape)
    c_in = input_shape[0] if config.channels_first else input_shape[-1]
    kind = RESNET_BLOCKS[config.depth][0]
    layers: list[nn.Module] = [] if config.channels_first else [ChannelsFirst()]
    layers.append(Stem(c_in, config.width, config.stem))
    channels = config.width
    for inner, c_out, stride in resnet_stages(config.depth, config.width):
        layers.append(Block(kind, channels, inner, c_out, stride))
        channels = c_out
    layers.append(Head(channels, num_classes))
    return nn.Sequential(*layers)
