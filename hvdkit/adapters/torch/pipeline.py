"""PyTorch's pipeline-stage operations: a micro-batch's forward, backward and (zb-h1) weight
gradients through one chunk of the kept model, for hvdkit.parallel.pipeline_step.

For zb-h1 the backward splits into `autograd.grad` for the input and each weighted layer's output
(B), and each layer's `backward(inputs=its parameters)` later (W). A mixin of TorchAdapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch import losses


class StageOps:
    """The pipeline-stage role (hvdkit.adapters.roles.PipelineStageOps) over the adapter's kept
    model: its chunks, devices and saved micro-batches."""


    def zero_grad(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad()

    def forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None, scale: float,
                input_grad: bool, chunk: int = 0) -> np.ndarray:
        x = self._chunk_inputs(inputs, chunk).requires_grad_(input_grad)
        if self.split_backward:
            self._mark_layers()
            self._marks = []
        with self.autocast():
            out = self.calls[chunk](x)
            marks, self._marks = self._marks or [], None
            if labels is None:
                self._saved[(mb, chunk)] = (x, out, marks)
                return out.detach().float().cpu().numpy()  # bf16 has no numpy dtype
            loss, correct = losses.loss_and_correct(self.task, out,
                                                    self._to(labels, out.device))
        self._saved[(mb, chunk)] = (x, loss * (scale * self.loss_scale()), marks)
        return np.array([loss.item(), correct.item()])

    def backward(self, mb: int, grad: np.ndarray | None, chunk: int = 0) -> np.ndarray | None:
        x, out, marks = self._saved.pop((mb, chunk))
        g = None if grad is None else torch.from_numpy(grad).to(out.device, out.dtype)
        if not self.split_backward:
            out.backward(g)
            return None if x.grad is None else x.grad.cpu().numpy()
        # B: the gradients of the input and of each layer's output, not of the weights; the
        # graph stays for W (autograd runs only the paths to the tensors asked for).
        wanted = [x] if x.requires_grad else []
        grads = torch.autograd.grad(out, [*wanted, *(o for _, o in marks)], g,
                                    retain_graph=True)
        self._saved[(mb, chunk)] = (marks, grads[len(wanted):])
        return grads[0].cpu().numpy() if wanted else None

    def backward_weights(self, mb: int, chunk: int = 0) -> None:
        """W: each layer's weight gradients from its output's gradient, accumulated into
        `.grad` as a backward would (so Horovod's per-parameter hooks see them)."""
        marks, grads = self._saved.pop((mb, chunk))
        for (layer, out), grad in zip(marks, grads, strict=True):
            out.backward(grad, inputs=[p for p in layer.parameters() if p.requires_grad])

    def _mark_layers(self) -> None:
        """Once: make each kept layer with parameters record its output while `_marks` is a
        list (W starts from there)."""
        if self._hooked:
            return

        def record(layer: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._marks is not None:
                self._marks.append((layer, output))

        for layer in self._layers:
            if self.layer_has_params(layer):
                layer.register_forward_hook(record)
        self._hooked = True

    def apply_gradients(self) -> None:
        self.exchange.step()

    @torch.no_grad()
    def infer(self, inputs: np.ndarray, chunk: int = 0) -> np.ndarray:
        self.model.eval()
        with self.autocast():
            out = self.chunks[chunk](self._chunk_inputs(inputs, chunk))
        return out.float().cpu().numpy()

    def output_sums(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return losses.eval_sums(self.task, torch.from_numpy(outputs), torch.from_numpy(labels))
