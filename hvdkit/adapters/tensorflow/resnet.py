"""ResNet v1.5 in Keras 3, the same architecture and parameter count as
hvdkit/adapters/torch/resnet.py (and the same arithmetic: explicit zero padding as torch pads,
no convolution bias, batch norm with torch's epsilon and momentum).

The model is a `keras.Sequential` of the stem, each residual block and the head, so
`model.layers` gives the same 1 + blocks + 1 layers a pipeline cuts as PyTorch's `children()`.
"""

from __future__ import annotations

from typing import Any

import keras

from hvdkit.adapters.tensorflow.batchnorm import SyncBatchNormalization
from hvdkit.adapters.tensorflow.models import MODELS, input_layers
from hvdkit.config import ModelConfig
from hvdkit.models.catalogue import RESNET_BLOCKS, check_images, resnet_stages

HE_FAN_OUT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def conv(filters: int, kernel: int, stride: int = 1) -> list[keras.layers.Layer]:
    """torch's Conv2d(padding=kernel // 2, bias=False): zero padding, then a valid convolution."""
    pad = [keras.layers.ZeroPadding2D(kernel // 2)] if kernel > 1 else []
    return [*pad, keras.layers.Conv2D(filters, kernel, stride, use_bias=False,
                                      kernel_initializer=keras.initializers.get(HE_FAN_OUT))]


def norm(sync: bool = False) -> keras.layers.BatchNormalization:
    """torch's BatchNorm2d defaults; model.sync_batchnorm: the global batch's moments."""
    return (SyncBatchNormalization if sync else keras.layers.BatchNormalization)(
        momentum=0.9, epsilon=1e-5)


def _build(layers: list[keras.layers.Layer], shape: Any) -> Any:
    """Build `layers` in turn from `shape` (a .keras file's loader builds before it loads
    weights); the output shape."""
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def _run(layers: list[keras.layers.Layer], x: Any, training: Any) -> Any:
    for layer in layers:
        x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) \
            else layer(x)
    return x


@keras.saving.register_keras_serializable(package="hvdkit.resnet")
class Stem(keras.layers.Layer):
    """imagenet: 7x7/2 convolution, norm, ReLU, 3x3/2 max-pool; small: 3x3/1, norm, ReLU."""

    def __init__(self, width: int, stem: str, sync: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width, self.stem = width, stem
        imagenet = stem == "imagenet"
        self.parts = [*conv(width, 7 if imagenet else 3, 2 if imagenet else 1), norm(sync),
                      keras.layers.ReLU()]
        if imagenet:  # after a ReLU, zero padding is as good as torch's -inf padding
            self.parts += [keras.layers.ZeroPadding2D(1), keras.layers.MaxPooling2D(3, 2)]

    def build(self, input_shape: Any) -> None:
        _build(self.parts, input_shape)

    def call(self, x: Any, training: Any = None) -> Any:
        return _run(self.parts, x, training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "width": self.width, "stem": self.stem}


@keras.saving.register_keras_serializable(package="hvdkit.resnet")
class Block(keras.layers.Layer):
    """A residual block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1), with a projection
    shortcut (1x1 convolution and norm) where the shape changes."""

    def __init__(self, kind: str, c_in: int, inner: int, c_out: int, stride: int,
                 sync: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.args = {"kind": kind, "c_in": c_in, "inner": inner, "c_out": c_out,
                     "stride": stride}
        shapes = ([(inner, 3, stride), (c_out, 3, 1)] if kind == "basic" else
                  [(inner, 1, 1), (inner, 3, stride), (c_out, 1, 1)])
        self.branch: list[keras.layers.Layer] = []
        for i, (filters, kernel, s) in enumerate(shapes):
            self.branch += [*conv(filters, kernel, s), norm(sync)]
            if i < len(shapes) - 1:
                self.branch.append(keras.layers.ReLU())
        self.shortcut = ([*conv(c_out, 1, stride), norm(sync)]
                         if stride != 1 or c_in != c_out else [])

    def build(self, input_shape: Any) -> None:
        _build(self.branch, input_shape)
        _build(self.shortcut, input_shape)

    def call(self, x: Any, training: Any = None) -> Any:
        return keras.ops.relu(_run(self.branch, x, training) + _run(self.shortcut, x, training))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.args}


@keras.saving.register_keras_serializable(package="hvdkit.resnet")
class Head(keras.layers.Layer):
    """Global average pooling and the classifier (torch's default Linear initialisation)."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.fc = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.
                                     VarianceScaling(1 / 3, "fan_in", "uniform"))

    def build(self, input_shape: Any) -> None:
        _build([self.pool, self.fc], input_shape)

    def call(self, x: Any) -> Any:
        return self.fc(self.pool(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}


@MODELS.register("resnet")
def resnet(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Images (N, H, W, C) to class logits (Keras models are channels last, whatever
    model.channels_first says)."""
    check_images(input_shape)
    kind = RESNET_BLOCKS[config.depth][0]
    sync = config.sync_batchnorm
    layers: list[keras.layers.Layer] = [Stem(config.width, config.stem, sync)]
    channels = config.width
    for inner, c_out, stride in resnet_stages(config.depth, config.width):
        layers.append(Block(kind, channels, inner, c_out, stride, sync))
        channels = c_out
    layers.append(Head(num_classes))
    return keras.Sequential([*input_layers(config, input_shape), *layers])
