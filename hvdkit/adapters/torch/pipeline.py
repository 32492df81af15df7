"""PyTorch pipeline stage: autograd per micro-batch, `backward(grad)` from the next stage.

The schedule, the layout and the messages live in hvdkit.parallel.runner; this file adds what
is PyTorch's: every rank builds the whole model with the recipe's seed (so a pipeline starts
from the very weights one process would) and keeps its stage's layers, placed on the stage's
devices (`cpu`, `cuda:i`). Received activations wrap their MPI buffers without a copy
(`torch.from_numpy`); outputs are sent from their own memory (`Tensor.numpy()`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch.adapter import make_optimizer, to_numpy, to_torch, torch_device
from hvdkit.adapters.torch.models import MODELS
from hvdkit.parallel.placement import device_for
from hvdkit.parallel.runner import PipelineAdapter, median_seconds
from hvdkit.recipe import ParallelConfig, Recipe


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


class TorchPipelineAdapter(PipelineAdapter):
    framework = "torch"

    def __init__(self, parallel: ParallelConfig) -> None:
        super().__init__(parallel)
        import horovod.torch as hvd

        self.hvd = hvd
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _set_up(self, threads: int, device: str, shared_ok: bool) -> str:
        torch.set_num_threads(threads)
        if not device:
            return ""
        return torch_device(device, self.hvd.local_rank(), self.hvd.local_size(), shared_ok)

    def _layers(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
                model: Any) -> list[Any]:
        torch.manual_seed(recipe.train.seed)
        if model is None:
            model = MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)
        elif not isinstance(model, nn.Module):
            model = model(input_shape, num_classes)
        return list(model.children())

    def _has_params(self, layer: Any) -> bool:
        return any(True for _ in layer.parameters())

    def _profile(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                 timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        params, shapes, seconds = [], [], []
        x = torch.zeros((rows, *input_shape))
        for index, layer in enumerate(layers):
            params.append(float(sum(p.numel() for p in layer.parameters())))
            if timed:  # forward and backward in training mode; the layer is left as it was
                state = copy.deepcopy(layer.state_dict())
                with torch.random.fork_rng():
                    seconds.append(median_seconds(_forward_backward, layer, x, index))
                layer.load_state_dict(state)
                for p in layer.parameters():
                    p.grad = None
            with torch.no_grad():
                x = layer.eval()(x)
                layer.train()
            shapes.append(tuple(x.shape[1:]))
        return params, shapes, seconds

    def _make_stage(self, parts: list[list[Any]], devices: list[str], recipe: Recipe) -> None:
        devices = [device_for(d, "torch") for d in devices]
        self.model = Placed([nn.Sequential(*p) for p in parts], devices)
        self.first_device, self.last_device = self.model.devices[0], self.model.devices[-1]
        self.optimizer = make_optimizer(recipe.optimizer, self.model.parameters())
        self.op = self.hvd.Sum if recipe.parallel.reduction == "sum" else self.hvd.Average

    def _zero_grad(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=False)

    def _forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None,
                 scale: float) -> Any:
        x = torch.from_numpy(inputs).to(self.first_device)
        if not self.first:
            x.requires_grad_(True)
        out = self.model(x)
        if labels is None:
            self._saved[mb] = (x, out)
            return out.detach().cpu().numpy()
        y = torch.from_numpy(labels).to(out.device)
        loss = nn.functional.cross_entropy(out, y)
        self._saved[mb] = (x, loss * scale)
        return np.array([loss.item(), (out.detach().argmax(1) == y).sum().item()])

    def _backward(self, mb: int, grad: np.ndarray | None) -> np.ndarray | None:
        x, out = self._saved.pop(mb)
        if grad is None:
            out.backward()
        else:
            out.backward(torch.from_numpy(grad).to(out.device))
        return None if self.first else x.grad.cpu().numpy()

    def _apply(self) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.process_set is not None:
            reduced = self.hvd.grouped_allreduce([p.grad for p in params], op=self.op,
                                                 process_set=self.process_set)
            for p, g in zip(params, reduced, strict=True):
                p.grad.copy_(g)
        self.optimizer.step()

    @torch.no_grad()
    def _infer(self, inputs: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.model(torch.from_numpy(inputs).to(self.first_device)).cpu().numpy()

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    @torch.no_grad()
    def _assign(self, arrays: list[np.ndarray]) -> None:
        for p, a in zip(self.model.parameters(), arrays, strict=True):
            p.copy_(torch.from_numpy(a))

    def _stage_state(self) -> dict[str, Any]:
        return {"model": to_numpy(self.model.state_dict()),
                "optimizer": to_numpy(self.optimizer.state_dict()),
                "rng": torch.get_rng_state().numpy().copy()}

    def _load_stage_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(to_torch(state["optimizer"]))
        torch.set_rng_state(torch.from_numpy(state["rng"]))


def _forward_backward(layer: nn.Module, x: torch.Tensor, index: int) -> None:
    """One layer's training work: forward, and backward including the input's gradient, which
    every layer but the model's first computes to pass it on."""
    x = x.detach().requires_grad_(index > 0)
    y = layer(x)
    if y.requires_grad:
        y.backward(torch.ones_like(y))
