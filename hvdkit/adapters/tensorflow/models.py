"""Keras 3 model builders, one per recipe model name, the same shapes as the PyTorch ones.

Images arrive channels last (N, H, W, C), Keras's convention, whatever model.channels_first
says (it is PyTorch's). resnet.py and gpt.py register theirs here too.
"""

from __future__ import annotations

import keras

from hvdkit.config import ModelConfig
from hvdkit.models.registry import Registry

MODELS: Registry = Registry("model")


def _dense_head(hidden: list[int], num_classes: int) -> list[keras.layers.Layer]:
    return [*(keras.layers.Dense(w, activation="relu") for w in hidden),
            keras.layers.Dense(num_classes)]


def input_layers(config: ModelConfig, input_shape: tuple[int, ...]) -> list[keras.layers.Layer]:
    """The model's input (channels last)."""
    return [keras.Input(input_shape)]


@MODELS.register("mlp")
def mlp(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             *_dense_head(config.hidden, num_classes)])


@MODELS.register("cnn")
def cnn(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    height, width = input_shape[:2]
    layers: list[keras.layers.Layer] = []
    for out in config.channels:
        layers.append(keras.layers.Conv2D(out, 3, padding="same", activation="relu"))
        if min(height, width) >= 4:  # pool while the map is large enough
            layers.append(keras.layers.MaxPooling2D(2))
            height, width = height // 2, width // 2
    return keras.Sequential([*input_layers(config, input_shape), *layers, keras.layers.Flatten(),
                             *_dense_head(config.hidden, num_classes)])
