"""BatchNorm statistics across data-parallel replicas, for Keras 3.

`average_statistics` allreduces (averages) every moving mean and variance over the replicas,
so that evaluation, checkpoints and exports see one model, not each rank's own statistics.
`SyncBatchNormalization` (model.sync_batchnorm) normalises by the moments of the whole global
batch: the sums of x and x^2 and the count are allreduced in training, and Horovod's allreduce
carries the gradient back. Written here because Horovod's TF SyncBatchNormalization fails
under Keras 3. hvdkit's ResNet uses it when asked; a Keras model of your own may use it too.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

STATISTICS = ("moving_mean", "moving_variance")


def average_statistics(variables: list[Any], hvd: Any, process_set: Any) -> None:
    """Every replica's moving statistics replaced by their average over `process_set`."""
    stats = [v for v in variables if v.name in STATISTICS and not v.trainable]
    if not stats or process_set.size() == 1:
        return
    averaged = hvd.grouped_allreduce([tf.convert_to_tensor(v.value) for v in stats],
                                     op=hvd.Average, process_set=process_set,
                                     name="hvdkit.bn_statistics")
    for variable, value in zip(stats, averaged, strict=True):
        variable.assign(value)


class SyncBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training moments are those of the global batch (Horovod's
    global process set; pipelines are refused by the recipe check)."""

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if training is not True:  # inference, and Keras's symbolic build
            return super().call(inputs, training=training, mask=mask)
        import horovod.tensorflow as hvd

        x = tf.cast(inputs, tf.float32)
        axis = self.axis % len(x.shape)
        axes = [i for i in range(len(x.shape)) if i != axis]
        count = tf.cast(tf.size(x), tf.float32) / tf.cast(tf.shape(x)[axis], tf.float32)
        local = tf.concat([tf.reduce_sum(x, axes), tf.reduce_sum(x * x, axes),
                           tf.reshape(count, [1])], 0)
        total = hvd.allreduce(local, op=hvd.Sum)
        channels = x.shape[axis]
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels:2 * channels] / n - mean * mean  # biased, as Keras keeps it
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + var * (1 - self.momentum))
        shape = [1] * len(x.shape)
        shape[axis] = channels
        y = (x - tf.reshape(mean, shape)) * tf.math.rsqrt(tf.reshape(var, shape) + self.epsilon)
        if self.scale:
            y = y * tf.reshape(self.gamma, shape)
        if self.center:
            y = y + tf.reshape(self.beta, shape)
        return tf.cast(y, inputs.dtype)
