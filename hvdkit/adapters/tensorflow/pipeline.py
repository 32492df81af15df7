"""TensorFlow / Keras 3 pipeline stage: a `GradientTape` per micro-batch, and
`tape.gradient(..., output_gradients=...)` with the gradient the next stage sent back.

The schedule, the layout and the messages live in hvdkit.parallel.runner. Every rank builds the
whole Keras model with the recipe's seed and keeps its stage's layers; the stage's call is one
`tf.function` (the tape records it as one op). With a placement, each part's computation runs
under `tf.device` (`/CPU:0`, `/GPU:i`); its variables stay where Keras created them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.adapters.tensorflow.adapter import make_optimizer, tf_device
from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.parallel.placement import device_for
from hvdkit.parallel.runner import PipelineAdapter, median_seconds
from hvdkit.recipe import ParallelConfig, Recipe


class TensorFlowPipelineAdapter(PipelineAdapter):
    framework = "tensorflow"

    def __init__(self, parallel: ParallelConfig) -> None:
        super().__init__(parallel)
        import horovod.tensorflow as hvd

        self.hvd = hvd
        self._saved: dict[int, tuple[Any, tf.Tensor, tf.Tensor]] = {}

    def _set_up(self, threads: int, device: str, shared_ok: bool) -> str:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        if not device:
            return ""
        return tf_device(device, self.hvd.local_rank(), self.hvd.local_size(), shared_ok)

    def _layers(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
                model: Any) -> list[Any]:
        keras.utils.set_random_seed(recipe.train.seed)
        if model is None:
            model = MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)
        elif not isinstance(model, keras.Model):
            model = model(input_shape, num_classes)
        return list(model.layers)

    def _has_params(self, layer: Any) -> bool:
        return bool(layer.trainable_weights)

    def _profile(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                 timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        params, shapes, seconds = [], [], []
        x = tf.zeros((rows, *input_shape))
        for index, layer in enumerate(layers):
            y = layer(x, training=False)  # builds the layer; a training call might move state
            params.append(float(sum(int(np.prod(w.shape)) for w in layer.trainable_weights)))
            if timed:  # forward and backward in training mode; the layer is left as it was
                state = layer.get_weights()
                seconds.append(median_seconds(_forward_backward, layer, x, index))
                layer.set_weights(state)
            x = y
            shapes.append(tuple(int(d) for d in x.shape[1:]))
        return params, shapes, seconds

    def _make_stage(self, parts: list[list[Any]], devices: list[str], recipe: Recipe) -> None:
        self.parts = parts
        self.devices = [device_for(d, "tensorflow") for d in devices]
        self.variables = [w for part in parts for layer in part for w in layer.trainable_weights]
        self.optimizer = make_optimizer(recipe.optimizer)
        self.optimizer.build(self.variables)
        self.op = self.hvd.Sum if recipe.parallel.reduction == "sum" else self.hvd.Average
        spec = [tf.TensorSpec((None, *self.in_shape), tf.float32)]
        self._train_call = tf.function(lambda x: self._call(x, True), input_signature=spec)
        self._eval_call = tf.function(lambda x: self._call(x, False), input_signature=spec)

    def _call(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        for part, device in zip(self.parts, self.devices, strict=True):
            with tf.device(device):
                for layer in part:
                    x = layer(x, training=training)
        return x

    def _zero_grad(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)
        self._grads = [tf.zeros_like(v) for v in self.variables]

    def _forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None,
                 scale: float) -> Any:
        x = tf.constant(inputs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self._train_call(x)
            if labels is not None:
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels, logits=out))
                scaled = loss * scale  # inside the tape, or the tape cannot see it
        if labels is None:
            self._saved[mb] = (tape, x, out)
            return out.numpy()
        self._saved[mb] = (tape, x, scaled)
        correct = tf.reduce_sum(tf.cast(tf.argmax(out, 1) == labels, tf.int64))
        return np.array([float(loss), float(correct)])

    def _backward(self, mb: int, grad: np.ndarray | None) -> np.ndarray | None:
        tape, x, out = self._saved.pop(mb)
        sources = self.variables if self.first else [x, *self.variables]
        grads = tape.gradient(out, sources,
                              output_gradients=None if grad is None else tf.constant(grad))
        if not self.first:
            grad_in, grads = grads[0], grads[1:]
        self._grads = [a + g for a, g in zip(self._grads, grads, strict=True)]
        return None if self.first else grad_in.numpy()

    def _apply(self) -> None:
        grads = self._grads
        if self.process_set is not None:
            grads = self.hvd.grouped_allreduce(grads, op=self.op, process_set=self.process_set)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))

    def _infer(self, inputs: np.ndarray) -> np.ndarray:
        return self._eval_call(tf.constant(inputs)).numpy()

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.variables]

    def _assign(self, arrays: list[np.ndarray]) -> None:
        for v, a in zip(self.variables, arrays, strict=True):
            v.assign(a)

    def _stage_state(self) -> dict[str, Any]:
        return {"model": [v.numpy() for v in self.variables],
                "optimizer": [v.numpy() for v in self.optimizer.variables]}

    def _load_stage_state(self, state: dict[str, Any]) -> None:
        for variable, value in zip([*self.variables, *self.optimizer.variables],
                                   [*state["model"], *state["optimizer"]], strict=True):
            variable.assign(value)


def _forward_backward(layer: Any, x: tf.Tensor, index: int) -> None:
    """One layer's training work: forward, and the gradients of its weights and (for every
    layer but the model's first, which passes it on) of its input."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    sources = [*layer.trainable_weights, *([x] if index > 0 else [])]
    if sources:
        tape.gradient(y, sources, output_gradients=tf.ones_like(y))
