"""TensorFlow side of cutting a model: per-layer profiles for a balanced cut.

The cut itself (which layers go where) is framework-free: hvdkit.parallel.pipeline_stage; the
adapter runs each part under `tf.device`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import tensorflow as tf

from hvdkit.parallel.pipeline import layer_seconds


def profile_layers(layers: list[Any], input_shape: tuple[int, ...], rows: int,
                   timed: bool, dtype: str = "float32"
                   ) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
    """Per layer: parameters, output feature shape, and (if `timed`) the seconds of its forward
    and backward on `rows` samples (inputs of `dtype`: token ids are zeros too; the layers
    timed in turn, hvdkit.parallel.pipeline.layer_seconds); each layer is left exactly as it
    was. Timing holds every layer's input at once: one micro-batch's activations."""
    params, shapes, inputs = [], [], []
    x = tf.zeros((rows, *input_shape), dtype=dtype)
    for layer in layers:
        y = layer(x, training=False)  # builds the layer; a training call might move state
        params.append(float(sum(int(np.prod(w.shape)) for w in layer.trainable_weights)))
        inputs.append(x)
        x = y
        shapes.append(tuple(int(d) for d in x.shape[1:]))
    if not timed:
        return params, shapes, []
    states = [layer.get_weights() for layer in layers]
    seconds = layer_seconds([functools.partial(_forward_backward, layer, x, index)
                             for index, (layer, x) in enumerate(zip(layers, inputs,
                                                                    strict=True))])
    for layer, state in zip(layers, states, strict=True):
        layer.set_weights(state)
    return params, shapes, seconds


def _forward_backward(layer: Any, x: tf.Tensor, index: int) -> None:
    """One layer's training work: forward, and the gradients of its weights and (for every
    layer but the model's first, which passes it on) of its input."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    sources = [*layer.trainable_weights, *([x] if index > 0 else [])]
    if sources:
        tape.gradient(y, sources, output_gradients=tf.ones_like(y))
