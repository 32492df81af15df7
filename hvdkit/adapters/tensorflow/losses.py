"""The task's loss and metrics in TensorFlow (hvdkit.models.tasks): one place for every step
and stage."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from hvdkit.models.tasks import Task

EPS = 1e-7  # the smallest probability a softmax output counts with (as Keras clips)


def _flat(task: Task, outputs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Logits (rows x classes) and int64 labels (rows): a language model's positions become
    rows, and a softmax's probabilities their log."""
    labels = tf.cast(labels, tf.int64)
    if task.outputs == "probabilities":
        outputs = tf.math.log(tf.maximum(outputs, EPS))
    if task.per_token:
        outputs = tf.reshape(outputs, (-1, tf.shape(outputs)[-1]))
        labels = tf.reshape(labels, (-1,))
    return outputs, labels


def loss_and_correct(task: Task, outputs: tf.Tensor, labels: tf.Tensor) -> tuple[Any, Any]:
    """The batch's mean loss (differentiable) and its number of correct predictions, in
    samples (a language model's correct tokens ÷ positions, so that ÷ samples is accuracy)."""
    positions = tf.cast(tf.size(labels) // tf.shape(labels)[0], tf.float32)
    logits, flat = _flat(task, outputs, labels)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=flat,
                                                                         logits=logits))
    correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == flat, tf.int64))
    if task.per_token:
        return loss, tf.cast(correct, tf.float32) / positions
    return loss, correct


def eval_sums(task: Task, outputs: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """`task.eval_sums` over the batch: summed loss, correct predictions, count (samples, or
    tokens for a language model), float64."""
    logits, flat = _flat(task, tf.cast(outputs, tf.float32), labels)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=flat, logits=logits)
    correct = tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == flat, tf.float64))
    count = tf.cast(tf.shape(flat)[0], tf.float64)
    return tf.stack([tf.reduce_sum(tf.cast(losses, tf.float64)), correct, count])
