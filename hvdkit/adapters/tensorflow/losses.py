"""The task's loss and metrics in TensorFlow (hvdkit.tasks): one place for every step and stage."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvdkit.tasks import Task


def loss_and_correct(task: Task, outputs: tf.Tensor, labels: tf.Tensor) -> tuple[Any, Any]:
    """The batch's mean loss (differentiable) and its number of correct predictions."""
    labels = tf.cast(labels, tf.int64)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=outputs))
    return loss, tf.reduce_sum(tf.cast(tf.argmax(outputs, -1) == labels, tf.int64))


def eval_sums(task: Task, outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """`task.eval_sums` over the batch: summed loss, correct predictions, count (float64)."""
    labels = tf.cast(labels, tf.int64)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                            logits=tf.cast(outputs, tf.float32))
    correct = tf.reduce_sum(tf.cast(tf.argmax(outputs, -1) == labels, tf.float64))
    count = tf.cast(tf.shape(labels)[0], tf.float64)
    return tf.stack([tf.reduce_sum(tf.cast(losses, tf.float64)), correct, count])
