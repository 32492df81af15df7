"""PyTorch mechanics: Horovod's DistributedOptimizer, the train and eval steps, state."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch.models import MODELS
from hvdkit.recipe import OptimizerConfig, Recipe
from hvdkit.world import World, default_threads, pick_gpu


def make_optimizer(config: OptimizerConfig, params: Any) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class TorchAdapter:
    framework = "torch"
    collective_state = False  # rank 0 holds the whole model

    def __init__(self) -> None:
        import horovod.torch as hvd

        self.hvd = hvd
        self.threads = 0
        self.device = "cpu"
        self.ps: Any = None  # a ParameterServer when parallel.sync is ps
        self._comm = 0.0
        self._copy_stream: Any = None  # the side stream of host-to-GPU batch copies

    def init(self, threads: int = 0, device: str = "auto") -> World:
        self.hvd.init()
        world = World.from_horovod(self.hvd)
        self.threads = threads or default_threads(world.local_size)
        torch.set_num_threads(self.threads)
        self.device = torch_device(device, world.local_rank, world.local_size,
                                   shared_ok=not self.hvd.nccl_built())
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
        self.model = model.to(self.device)
        self.accumulation = recipe.parallel.accumulation
        compression = (self.hvd.Compression.fp16 if recipe.parallel.compression == "fp16"
                       else self.hvd.Compression.none)
        if recipe.parallel.sync == "ps":
            from hvdkit.parallel.ps import ParameterServer

            self.ps = ParameterServer(self.hvd.size(), recipe.parallel.compression)
            self.ps_average = recipe.parallel.reduction == "average"
            self.optimizer = make_optimizer(recipe.optimizer, model.parameters())
            self.loss_fn = nn.CrossEntropyLoss()
            return
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
        inputs, labels = self._on_device(x), self._on_device(y)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        # Micro-batches: Horovod allreduces after the last backward pass (backward_passes_per_step).
        for xb, yb in zip(inputs.chunk(self.accumulation), labels.chunk(self.accumulation),
                          strict=True):
            logits = self.model(xb)
            loss = self.loss_fn(logits, yb)
            (loss / self.accumulation).backward()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == yb).sum()
        if self.ps is not None:
            self._ps_step()
        else:
            started = time.perf_counter()
            self.optimizer.step()  # waits for the allreduce still in flight, then updates
            self._comm += time.perf_counter() - started
        return {"loss": loss_sum.item() / self.accumulation, "accuracy": correct.item() / len(y)}

    @torch.no_grad()
    def _ps_step(self) -> None:
        """Gradients to rank 0, its optimizer step, parameters back (hvdkit.parallel.ps)."""
        from hvdkit.parallel.ps import flatten, unflatten

        params = list(self.model.parameters())
        grads = [p.grad.cpu().numpy() if p.grad is not None else np.zeros(p.shape, np.float32)
                 for p in params]
        total = self.ps.push(flatten(grads), average=self.ps_average)
        if total is not None:
            for p, g in zip(params, unflatten(total, params), strict=True):
                p.grad = torch.from_numpy(g.copy()).to(self.device)
            self.optimizer.step()
        flat = flatten([p.detach().cpu().numpy() for p in params])
        for p, value in zip(params, unflatten(self.ps.pull(flat), params), strict=True):
            p.copy_(torch.from_numpy(value))

    def comm_seconds(self) -> float:
        """Seconds spent waiting for gradient exchange (ring: inside optimizer.step)."""
        return self.ps.seconds if self.ps is not None else self._comm

    @torch.no_grad()
    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        self.model.eval()
        labels = self._on_device(y)
        logits = self.model(self._on_device(x))
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(1) == labels).sum()
        return {"loss_sum": loss.item(), "correct": correct.item(), "count": len(y)}

    def _on_device(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(array, torch.Tensor):  # staged by `stage` already
            return array.to(self.device, non_blocking=True)
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def stage(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The input path's last step, run in the prefetch thread: a batch as tensors on this
        rank's device. On a GPU: pinned host memory, an asynchronous copy on a side stream,
        waited for here (off the step's thread); the step's stream then owns the memory."""
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if not self.device.startswith("cuda"):
            return xt, yt
        device = torch.device(self.device)
        with torch.cuda.device(device):
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(device)
            with torch.cuda.stream(self._copy_stream):
                xd = xt.pin_memory().to(device, non_blocking=True)
                yd = yt.pin_memory().to(device, non_blocking=True)
            self._copy_stream.synchronize()
            compute = torch.cuda.default_stream(device)
            xd.record_stream(compute)  # freed only once the step's kernels are done with it
            yd.record_stream(compute)
        return xd, yd

    def broadcast_state(self, root_rank: int = 0) -> None:
        self.hvd.broadcast_parameters(self.model.state_dict(), root_rank=root_rank)
        self.hvd.broadcast_optimizer_state(self.optimizer, root_rank=root_rank)

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(torch.from_numpy(np.ascontiguousarray(values)),
                                  op=reduce_op, name=name).numpy()

    def state(self) -> dict[str, Any]:
        """Model, optimizer and torch's RNGs, as numpy and plain Python (no tensors)."""
        state = {"model": to_numpy(self.model.state_dict()),
                 "optimizer": to_numpy(self.optimizer.state_dict()),
                 "rng": torch.get_rng_state().numpy().copy()}
        if self.device != "cpu":
            state["cuda_rng"] = torch.cuda.get_rng_state().numpy().copy()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(to_torch(state["optimizer"]))
        if "rng" in state:
            torch.set_rng_state(torch.from_numpy(state["rng"]))
        if "cuda_rng" in state and self.device != "cpu":
            torch.cuda.set_rng_state(torch.from_numpy(state["cuda_rng"]))

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """Rank `root_rank`'s picklable `obj` on every rank (`name`: the same on all ranks)."""
        return self.hvd.broadcast_object(obj, root_rank=root_rank, name=name)

    def join(self) -> None:
        """Wait, answering the others' allreduces with zeros, until every rank has joined."""
        self.hvd.join()

    def elastic_state(self, **values: Any) -> Any:
        """Horovod's elastic state: the model, the optimizer and `values` (the position)."""
        return self.hvd.elastic.TorchState(self.model, self.optimizer, **values)

    def elastic_run(self, func: Any) -> Any:
        return self.hvd.elastic.run(func)

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]


def torch_device(device: str, local_rank: int, local_size: int, shared_ok: bool) -> str:
    """`cpu` or this rank's `cuda:i` for train.device (hvdkit.world.pick_gpu), made current."""
    gpu = pick_gpu(device, local_rank, local_size, torch.cuda.device_count(), shared_ok)
    if gpu is None:
        return "cpu"
    torch.cuda.set_device(gpu)
    return f"cuda:{gpu}"


def to_numpy(value: Any) -> Any:
    """A copy of a nested state dict with every tensor turned into a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_numpy(v) for v in value)
    return value


def to_torch(value: Any) -> Any:
    """The inverse of `to_numpy`."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: to_torch(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_torch(v) for v in value)
    return value
