"""PyTorch mechanics: Horovod set-up, the model kept by this rank, the steps, the state.

One adapter serves every layout (hvdkit.parallel composes them): a whole model or parts of it
on devices (placement), a pipeline stage's micro-batches, and any gradient exchange. The ring
exchange is Horovod's DistributedOptimizer (allreduce overlapped with backward, over the
replicas' process set); others call `optimizer_step` with gradients they combined.
A pipeline stage runs its micro-batches through one chunk of the model or several (virtual
stages); for zb-h1 the backward splits into `autograd.grad` for the input and each weighted
layer's output (B), and each layer's `backward(inputs=its parameters)` later (W).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.base import Adapter
from hvdkit.adapters.torch import batchnorm, losses, usermodel
from hvdkit.adapters.torch.exchange import make_exchange
from hvdkit.adapters.torch.inputs import normalize
from hvdkit.adapters.torch.models import MODELS, to_channels_first
from hvdkit.adapters.torch.optimizers import make_optimizer
from hvdkit.adapters.torch.pipeline import StageOps
from hvdkit.adapters.torch.placement import Placed, profile_layers
from hvdkit.adapters.torch.precision import autocast, guarded_update, memory_format, prepare
from hvdkit.adapters.torch.state import to_numpy, to_torch
from hvdkit.config import OptimizerConfig
from hvdkit.parallel.exchange import ExchangePlan, GradientExchange
from hvdkit.runtime.world import default_threads, pick_gpu


class TorchAdapter(StageOps, Adapter):
    framework = "torch"

    def __init__(self) -> None:
        super().__init__()
        import horovod.torch as hvd

        self.hvd = hvd
        # (micro-batch, chunk) → its input, what backward differentiates, and (split_backward)
        # the outputs of its layers with parameters; after a split B, those outputs' gradients.
        self._saved: dict[tuple[int, int], tuple[Any, ...]] = {}
        self._marks: list[tuple[nn.Module, torch.Tensor]] | None = None
        self._hooked = False
        self._copy_streams: dict[torch.device, Any] = {}  # host-to-GPU batch copies

    # -- set-up ---------------------------------------------------------------------------

    def init(self, process_sets: list[list[int]], threads: int, device: str,
             exclusive_gpu: bool) -> tuple[int, ...]:
        hvd = self.hvd
        self.start_horovod(process_sets)
        self.threads = threads or default_threads(hvd.local_size())
        torch.set_num_threads(self.threads)
        self.device = torch_device(device, hvd.local_rank(), hvd.local_size(),
                                   shared_ok=not (exclusive_gpu and hvd.nccl_built()))
        return hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def builtin_model(self, config: Any, input_shape: tuple[int, ...],
                      num_classes: int) -> nn.Module:
        return MODELS.get(config.name)(config, input_shape, num_classes)

    def user_model(self, model: Any, input_shape: tuple[int, ...], num_classes: int,
                   what: str) -> nn.Module:
        return usermodel.as_model(model, input_shape, num_classes, what)

    def probe(self, model: nn.Module, sample: np.ndarray, what: str) -> np.ndarray:
        return usermodel.probe(model, sample, "cpu", self.channels_first, what)

    def synchronise_batchnorm(self, model: nn.Module) -> None:
        batchnorm.synchronise(model, self.hvd, self.hvd.global_process_set)

    def parameter_keys(self, layer: Any = None) -> list[int]:
        return [id(p) for p in (self.model if layer is None else layer).parameters()]

    def model_layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.children())

    def layer_has_params(self, layer: nn.Module) -> bool:
        return any(True for _ in layer.parameters())

    def profile_layers(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                       timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        return profile_layers(layers, input_shape, rows, timed, self.input_dtype)

    def keep(self, parts: list[list[Any]], devices: list[str]) -> None:
        self._layers = [layer for part in parts for layer in part]
        if len(parts) == 1 and len(parts[0]) == 1:
            self.device = torch_name(devices[0])
            self.model = parts[0][0].to(self.device)
            self.first_device = self.last_device = torch.device(self.device)
        else:
            self.model = Placed([nn.Sequential(*p) for p in parts],
                                [torch_name(d) for d in devices])
            self.first_device, self.last_device = self.model.devices[0], self.model.devices[-1]
            self.device = ",".join(str(d) for d in self.model.devices)
        self.chunks: list[nn.Module] = [self.model]
        self._prepare()

    def keep_chunks(self, chunks: list[list[Any]], device: str) -> None:
        self._layers = [layer for chunk in chunks for layer in chunk]
        self.device = torch_name(device)
        self.chunks = [nn.Sequential(*chunk).to(self.device) for chunk in chunks]
        self.model = nn.ModuleList(self.chunks)  # parameters, state and modes of them all
        self.first_device = self.last_device = torch.device(self.device)
        self._prepare()

    def _prepare(self) -> None:
        """The kept chunks in their memory format, and what the training forward calls."""
        self.input_format = memory_format(self.memory_format, self.first_device)
        self.calls = prepare(self.chunks, self.first_device, self.memory_format, self.compile,
                             say=self._say)

    def _say(self, message: str) -> None:
        if self.hvd.rank() == 0:
            print(message, file=sys.stderr, flush=True)

    def make_optimizer(self, config: OptimizerConfig) -> None:
        self.optimizer = make_optimizer(config, self.model.parameters())

    def make_exchange(self, plan: ExchangePlan) -> GradientExchange:
        return make_exchange(plan)

    def optimizer_state_bytes(self) -> int:
        from hvdkit.adapters.torch.zero import optimizer_state_bytes

        return optimizer_state_bytes(self.optimizer)

    # -- one step on the whole kept model -------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, accumulation: int) -> Any:
        self.zero_grad(lr)
        inputs, labels = self._inputs(x), self._to(y, self.last_device)
        sums = torch.zeros(2, device=self.last_device)
        scale = self.loss_scale()
        for xb, yb in zip(inputs.chunk(accumulation), labels.chunk(accumulation), strict=True):
            with self.autocast():
                out = self.calls[0](xb)
                loss, correct = losses.loss_and_correct(self.task, out, yb)
            (loss / accumulation if scale == 1.0 else loss * (scale / accumulation)).backward()
            sums += torch.stack([loss.detach() * len(yb), correct.to(sums.dtype)])
        self.apply_gradients()
        return sums / len(y)  # mean loss, accuracy: read back only when logged

    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        return torch.stack(handles).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.autocast():
            out = self.model(self._inputs(x))
        return losses.eval_sums(self.task, out, self._to(y, out.device))

    # -- what the gradient exchanges use --------------------------------------------------

    def optimizer_step(self) -> None:
        self.sum_tied()
        # ZeRO-1 guards inside its own step, between its reduce-scatter and its update.
        guard = None if self.exchange.name == "zero1" else self.exchange.guard
        guarded_update(guard, list(self.model.parameters()), self.hvd, self.optimizer.step)

    def autocast(self) -> Any:
        """train.precision's autocast on the first device's type (a no-op for fp32)."""
        return autocast(self.first_device, self.precision)

    def loss_scale(self) -> float:
        """What the loss is multiplied by before backward (fp16's scale, else 1)."""
        guard = self.exchange.guard
        return guard.scale if guard is not None else 1.0

    @torch.no_grad()
    def sum_tied(self) -> None:
        """Weights shared with other pipeline stages (a tied head): their gradients summed."""
        if self.tied is None:
            return
        params = list(self.model.parameters())
        for i in self.tied.indices:
            grad = params[i].grad.detach().cpu().numpy().copy()
            self.tied.reduce_one(i, grad)
            params[i].grad.copy_(torch.from_numpy(grad))

    def gradients_as_numpy(self) -> list[np.ndarray]:
        return [p.grad.detach().cpu().numpy() if p.grad is not None
                else np.zeros(p.shape, np.float32) for p in self.model.parameters()]

    @torch.no_grad()
    def set_gradients(self, arrays: list[np.ndarray]) -> None:
        for p, g in zip(self.model.parameters(), arrays, strict=True):
            p.grad = torch.from_numpy(np.array(g)).to(p.device)

    @torch.no_grad()
    def assign_parameters(self, arrays: list[np.ndarray]) -> None:
        for p, a in zip(self.model.parameters(), arrays, strict=True):
            p.copy_(torch.from_numpy(np.asarray(a)))

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in self.model.parameters()]

    # -- collectives, state, fault tolerance ----------------------------------------------

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(torch.from_numpy(np.ascontiguousarray(values)),
                                  op=reduce_op, name=name).numpy()

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=root_rank, name=name)

    def average_statistics(self) -> None:
        ranks = self.exchange.plan.ranks
        if ranks is not None and len(ranks) == 1:  # one replica (a pipeline stage): as it is
            return
        batchnorm.average_statistics(self.model, self.hvd, self.process_set(ranks))

    def broadcast_state(self, root_rank: int = 0) -> None:
        self.hvd.broadcast_parameters(self.model.state_dict(), root_rank=root_rank)
        # Not ZeRO-1's shards; nor an empty state, which Horovod would first fill by a step
        # with zero gradients: Adam would count that step, and weight decay would move p.
        if isinstance(self.optimizer, torch.optim.Optimizer) and self.optimizer.state:
            self.hvd.broadcast_optimizer_state(self.optimizer, root_rank=root_rank)

    def state(self) -> dict[str, Any]:
        """Model, optimizer and torch's RNGs, as numpy and plain Python (no tensors). Under
        ZeRO-1 or PowerSGD a collective: the whole optimizer state, every rank's errors
        (the exchange's own state, hvdkit/adapters/torch/exchange.py)."""
        state = {"model": to_numpy(self.model.state_dict()),
                 "optimizer": to_numpy(self.optimizer.state_dict()),
                 "rng": torch.get_rng_state().numpy().copy(), **self.exchange.state()}
        if torch.cuda.is_available() and "cuda" in self.device:
            state["cuda_rng"] = torch.cuda.get_rng_state().numpy().copy()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(to_torch(state["optimizer"]))
        self.exchange.load_state(state)
        if "rng" in state:
            torch.set_rng_state(torch.from_numpy(state["rng"]))
        if "cuda_rng" in state and "cuda" in self.device:
            torch.cuda.set_rng_state(torch.from_numpy(state["cuda_rng"]))

    def elastic_state(self, **values: Any) -> Any:
        """Horovod's elastic state: the model, the optimizer and `values` (the position)."""
        return self.hvd.elastic.TorchState(self.model, self.optimizer, **values)

    def _inputs(self, array: np.ndarray) -> torch.Tensor:
        """A batch of inputs on the first device, (N, C, H, W) with model.channels_first."""
        x = normalize(self._to(array, self.first_device), self.input_normalization)
        if self.channels_first and x.ndim == 4:
            return to_channels_first(x, self.input_format)
        return x

    def _chunk_inputs(self, array: np.ndarray, chunk: int) -> torch.Tensor:
        """A chunk's inputs on the first device: the batch's layout for this stage's first
        chunk, activations as they came for its later chunks (virtual stages)."""
        return self._inputs(array) if chunk == 0 else self._to(array, self.first_device)

    @staticmethod
    def _to(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
        if isinstance(array, torch.Tensor):  # staged already (a no-op where it is on device)
            return array.to(device, non_blocking=True)
        return torch.from_numpy(array).to(device, non_blocking=True)

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """In the prefetch thread: the inputs on the first part's device, the labels on the
        last's. To a GPU: pinned host memory and an asynchronous copy on a side stream, waited
        for here (off the step's thread); the GPU's default stream, which runs the step, then
        owns the memory."""
        return (self._stage(torch.from_numpy(x), self.first_device),
                self._stage(torch.from_numpy(y), self.last_device))

    def _stage(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        if device.type != "cuda":
            return tensor
        with torch.cuda.device(device):
            stream = self._copy_streams.get(device)
            if stream is None:
                stream = self._copy_streams[device] = torch.cuda.Stream(device)
            with torch.cuda.stream(stream):
                staged = tensor.pin_memory().to(device, non_blocking=True)
            stream.synchronize()
            staged.record_stream(torch.cuda.default_stream(device))  # freed after the step
        return staged


def torch_name(device: str) -> str:
    """PyTorch's spelling of a device named in either framework's (cpu, cuda:i, /GPU:i)."""
    from hvdkit.runtime.devices import device_for

    return device_for(device, "torch")


def torch_device(device: str, local_rank: int, local_size: int, shared_ok: bool) -> str:
    """`cpu` or this rank's `cuda:i` for train.device (runtime.world.pick_gpu), made current."""
    gpu = pick_gpu(device, local_rank, local_size, torch.cuda.device_count(), shared_ok)
    if gpu is None:
        return "cpu"
    torch.cuda.set_device(gpu)
    return f"cuda:{gpu}"

