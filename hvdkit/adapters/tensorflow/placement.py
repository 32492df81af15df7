"""TensorFlow side of cutting a model: per-layer profiles for a balanced cut.

The cut itself (which layers go where) is framework-free: hvdkit.parallel.pipeline_stage; the
adapter runs each part under `tf.device`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from hvdkit.parallel.pipeline import median_seconds


def profile_layers(layers: list[Any], input_shape: tuple[int, ...], rows: int,
                   timed: bool, dtype: str = "float32"
                   ) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
    """Per layer: parameters, output feature shape, and (if `timed`) the median seconds of its
    forward and backward on `rows` samples (inputs of `dtype`: token ids are zeros too); each
    layer is left exactly as it was."""
    params, shapes, seconds = [], [], []
    x = tf.zeros((rows, *input_shape), dtype=dtype)
    for index, layer in enumerate(layers):
        y = layer(x, training=False)  # builds the layer; a training call might move state
        params.append(float(sum(int(np.prod(w.shape)) for w in layer.trainable_weights)))
        if timed:
            state = layer.get_weights()
            seconds.append(median_seconds(_forward_backward, layer, x, index))
            layer.set_weights(state)
        x = y
        shapes.append(tuple(int(d) for d in x.shape[1:]))
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
