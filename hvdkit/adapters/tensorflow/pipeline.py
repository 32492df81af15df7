"""TensorFlow's pipeline-stage operations: a micro-batch's forward, backward and (zb-h1) weight
gradients through one chunk of the kept model, for hvdkit.parallel.pipeline_step.

Each micro-batch runs under a `GradientTape`, and `tape.gradient(..., output_gradients=...)` takes
the gradient the next stage sent back; for zb-h1 the forward runs layer by layer under two tapes,
so the input's and the weights' gradients come apart. A mixin of TensorFlowAdapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from hvdkit.adapters.tensorflow import losses
from hvdkit.adapters.tensorflow.precision import as_float32


class StageOps:
    """The pipeline-stage role (hvdkit.adapters.roles.PipelineStageOps) over the adapter's kept
    model: its chunks, devices and saved micro-batches."""


    def zero_grad(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(lr)
        self._grads = [tf.zeros_like(v) for v in self.trainable]

    def forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None, scale: float,
                input_grad: bool, chunk: int = 0) -> np.ndarray:
        x = self._chunk_inputs(inputs, chunk)
        if self.split_backward:
            out, loss, correct = self._split_forward((mb, chunk), x, labels, scale, input_grad)
        else:
            with tf.GradientTape() as tape:
                if input_grad:
                    tape.watch(x)
                out = self._train_calls[chunk](x)
                if labels is not None:
                    loss, correct = losses.loss_and_correct(self.task, out, labels)
                    scaled = loss * (scale * self.loss_scale())  # inside the tape
            self._saved[(mb, chunk)] = (tape, x if input_grad else None,
                                        out if labels is None else scaled)
        if labels is None:
            return out.numpy()
        return np.array([float(loss), float(correct)])

    def backward(self, mb: int, grad: np.ndarray | None, chunk: int = 0) -> np.ndarray | None:
        if self.split_backward:
            return self._split_backward((mb, chunk), grad)
        tape, x, out = self._saved.pop((mb, chunk))
        weights = self._chunk_weights[chunk]
        grads = tape.gradient(out, weights if x is None else [x, *weights],
                              output_gradients=None if grad is None else tf.constant(grad))
        grad_in = None
        if x is not None:
            grad_in, grads = grads[0].numpy(), grads[1:]
        self._accumulate(weights, grads)
        return grad_in

    def _split_forward(self, key: tuple[int, int], x: tf.Tensor, labels: np.ndarray | None,
                       scale: float, input_grad: bool) -> tuple[Any, Any, Any]:
        """Forward layer by layer (eagerly) under two tapes: one that watches only each
        layer's input (cut from the layer before by `stop_gradient`), for B, and one that
        watches only the weights, for W, so that neither computes the other's gradients."""
        parts, devices = self.chunks[key[1]]
        loss = correct = None
        with tf.GradientTape(persistent=True) as w_tape, tf.GradientTape(
                persistent=True, watch_accessed_variables=False) as b_tape:
            h, layers = x, []
            for part, device in zip(parts, devices, strict=True):
                with tf.device(device):
                    for layer in part:
                        layer_in = tf.stop_gradient(h)
                        b_tape.watch(layer_in)
                        h = layer(layer_in, training=True)
                        layers.append((layer, layer_in, h))
            target = h
            if labels is not None:
                loss, correct = losses.loss_and_correct(self.task, as_float32(h), labels)
                target = loss * (scale * self.loss_scale())
        self._saved[key] = (b_tape, w_tape, input_grad, target, h, layers)
        return as_float32(h), loss, correct

    def _split_backward(self, key: tuple[int, int], grad: np.ndarray | None) -> Any:
        """B: the gradient back through the layers' inputs; keeps each weighted layer's output
        gradient for W."""
        b_tape, w_tape, input_grad, target, out, layers = self._saved.pop(key)
        g = (b_tape.gradient(target, out) if grad is None else tf.constant(grad))
        pending = []
        for index in reversed(range(len(layers))):
            layer, layer_in, layer_out = layers[index]
            g = tf.cast(g, layer_out.dtype)  # mixed precision: activations in bf16 / fp16
            if layer.trainable_weights:
                pending.append((layer, layer_out, g))
            if index or input_grad:
                g = b_tape.gradient(layer_out, layer_in, output_gradients=g)
        self._saved[key] = (w_tape, pending)
        return as_float32(g).numpy() if input_grad else None

    def backward_weights(self, mb: int, chunk: int = 0) -> None:
        w_tape, pending = self._saved.pop((mb, chunk))
        for layer, layer_out, g in pending:
            weights = layer.trainable_weights
            self._accumulate(weights, w_tape.gradient(layer_out, weights, output_gradients=g))

    def _accumulate(self, weights: list[Any], grads: list[tf.Tensor]) -> None:
        for w, g in zip(weights, grads, strict=True):
            i = self._index[id(w)]
            self._grads[i] = self._grads[i] + g

    def apply_gradients(self) -> None:
        self.exchange.step()

    def loss_scale(self) -> float:
        """What the loss is multiplied by before backward (fp16's scale, else 1)."""
        guard = self.exchange.guard
        return guard.scale if guard is not None else 1.0

    def infer(self, inputs: np.ndarray, chunk: int = 0) -> np.ndarray:
        return self._eval_calls[chunk](self._chunk_inputs(inputs, chunk)).numpy()

    def output_sums(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return losses.eval_sums(self.task, tf.constant(outputs),
                                tf.constant(labels)).numpy().astype(np.float64)
