"""Image batches that arrive as uint8 (N, H, W, C), a quarter of float32's host-to-device
traffic, made float32 and normalised on their device: (x / 255 - mean) / std per channel."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def normalize(x: Any, normalization: Any) -> Any:
    """`x` (a tensor or a numpy array) normalised where it is uint8 and `normalization` is
    (mean, std); else `x`. The ops run where x is (a staged batch: its device)."""
    if normalization is None or tf.as_dtype(x.dtype) != tf.uint8:
        return x
    mean, std = normalization
    with tf.device(x.device if isinstance(x, tf.Tensor) else None):
        shift = tf.constant([255 * m for m in mean], tf.float32)
        scale = tf.constant([1 / (255 * s) for s in std], tf.float32)
        return (tf.cast(x, tf.float32) - shift) * scale
