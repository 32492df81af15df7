"""PyTorch mechanics: Horovod's DistributedOptimizer, the train and eval steps, state."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch.models import MODELS
from hvdkit.recipe import OptimizerConfig, Recipe
from hvdkit.world import World, default_threads


def make_optimizer(config: OptimizerConfig, params: Any) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class TorchAdapter:
    framework = "torch"

    def __init__(self) -> None:
        import horovod.torch as hvd

        self.hvd = hvd
        self.threads = 0

    def init(self, threads: int = 0) -> World:
        self.hvd.init()
        world = World.from_horovod(self.hvd)
        self.threads = threads or default_threads(world.local_size)
        torch.set_num_threads(self.threads)
        return world

    def _reduce_op(self, reduction: str) -> Any:
        return {"average": self.hvd.Average, "sum": self.hvd.Sum,
                "adasum": self.hvd.Adasum}[reduction]

    def build(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
              model: Any = None) -> None:
        torch.manual_seed(recipe.train.seed)
        if model is None:
            model = MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)
        elif not isinstance(model, nn.Module):
            model = model(input_shape, num_classes)
        self.model = model
        self.accumulation = recipe.parallel.accumulation
        compression = (self.hvd.Compression.fp16 if recipe.parallel.compression == "fp16"
                       else self.hvd.Compression.none)
        self.optimizer = self.hvd.DistributedOptimizer(
            make_optimizer(recipe.optimizer, model.parameters()),
            named_parameters=model.named_parameters(),
            op=self._reduce_op(recipe.parallel.reduction),
            compression=compression,
            backward_passes_per_step=self.accumulation,
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad()
        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.long)
        # Micro-batches: Horovod allreduces after the last backward pass (backward_passes_per_step).
        for xb, yb in zip(inputs.chunk(self.accumulation), labels.chunk(self.accumulation),
                          strict=True):
            logits = self.model(xb)
            loss = self.loss_fn(logits, yb)
            (loss / self.accumulation).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == yb).sum()
        self.optimizer.step()
        return {"loss": loss_sum.item() / self.accumulation, "accuracy": correct.item() / len(y)}

    @torch.no_grad()
    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        self.model.eval()
        labels = torch.from_numpy(y)
        logits = self.model(torch.from_numpy(x))
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(1) == labels).sum()
        return {"loss_sum": loss.item(), "correct": correct.item(), "count": len(y)}

    def broadcast_state(self, root_rank: int = 0) -> None:
        self.hvd.broadcast_parameters(self.model.state_dict(), root_rank=root_rank)
        self.hvd.broadcast_optimizer_state(self.optimizer, root_rank=root_rank)

    def allreduce(self, values: np.ndarray, op: str = "average") -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(torch.from_numpy(np.ascontiguousarray(values)),
                                  op=reduce_op).numpy()

    def state(self) -> dict[str, Any]:
        return {"model": {k: v.numpy().copy() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(state["optimizer"])

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.model.parameters()]
