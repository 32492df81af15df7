"""PyTorch side of cutting a model: parts on their own devices, and per-layer profiles.

The cut itself (which layers go where) is framework-free: hvdkit.parallel.pipeline_stage.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from hvdkit.parallel.pipeline import layer_seconds


class Placed(nn.Module):
    """Parts of a model on their own devices; forward moves activations between them."""

    def __init__(self, parts: list[nn.Module], devices: list[str]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(part.to(device) for part, device in
                                   zip(parts, devices, strict=True))
        self.devices = [torch.device(d) for d in devices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part, device in zip(self.parts, self.devices, strict=True):
            x = part(x.to(device))
        return x


def profile_layers(layers: list[nn.Module], input_shape: tuple[int, ...], rows: int,
                   timed: bool, dtype: str = "float32"
                   ) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
    """Per layer: parameters, output feature shape, and (if `timed`) the seconds of its forward
    and backward on `rows` samples (inputs of `dtype`: token ids are zeros too; the layers
    timed in turn, hvdkit.parallel.pipeline.layer_seconds); each layer is left exactly as it
    was. Timing holds every layer's input at once: one micro-batch's activations."""
    params, shapes, inputs = [], [], []
    x = torch.zeros((rows, *input_shape), dtype=getattr(torch, dtype))
    for layer in layers:
        params.append(float(sum(p.numel() for p in layer.parameters())))
        inputs.append(x)
        with torch.no_grad():
            x = layer.eval()(x)
            layer.train()
        shapes.append(tuple(x.shape[1:]))
    if not timed:
        return params, shapes, []
    states = [copy.deepcopy(layer.state_dict()) for layer in layers]
    with torch.random.fork_rng():
        seconds = layer_seconds([functools.partial(_forward_backward, layer, x, index)
                                 for index, (layer, x) in enumerate(zip(layers, inputs,
                                                                        strict=True))])
    for layer, state in zip(layers, states, strict=True):
        layer.load_state_dict(state)
        for p in layer.parameters():
            p.grad = None
    return params, shapes, seconds


def _forward_backward(layer: nn.Module, x: torch.Tensor, index: int) -> None:
    """One layer's training work: forward, and backward including the input's gradient, which
    every layer but the model's first computes to pass it on."""
    x = x.detach().requires_grad_(index > 0)
    y = layer(x)
    if y.requires_grad:
        y.backward(torch.ones_like(y))
