"""The adapter contract in the four roles its callers use, one mixin class each.

`ModelAndStep` (the trainer and hvdkit.parallel), `PipelineStageOps` (a pipeline stage),
`ExchangeHooks` (the gradient exchanges) and `StateAndCollectives` (checkpoints, elastic
training, the trainer's metrics). hvdkit.adapters.base composes them into `Adapter`, whose
attributes (`hvd`, `framework`, `task`, ...) the defaults here rely on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

import numpy as np

from hvdkit.config import OptimizerConfig, Recipe
from hvdkit.errors import UserError
from hvdkit.models.tasks import Task
from hvdkit.parallel.exchange import ExchangePlan, GradientExchange

# Horovod's static process sets, by their ranks: fixed when Horovod starts, once per process.
PROCESS_SETS: dict[tuple[int, ...], Any] = {}


class ModelAndStep(ABC):
    """Role of the trainer and hvdkit.parallel: start Horovod, build and keep this rank's
    model, make its optimizer and gradient exchange, and run one step on it."""

    @abstractmethod
    def init(self, process_sets: list[list[int]], threads: int, device: str,
             exclusive_gpu: bool) -> tuple[int, ...]:
        """Start Horovod with these static process sets (rank lists), pin intra-op threads
        (0: cores ÷ local ranks), choose this rank's device for train.device (`exclusive_gpu`:
        replicas average over NCCL, which needs a GPU each); return (rank, size, local_rank,
        local_size)."""

    def start_horovod(self, process_sets: list[list[int]]) -> None:
        """Start Horovod (once per process) with these static process sets (rank lists)."""
        hvd = self.hvd
        if not hvd.is_initialized():
            sets = [hvd.ProcessSet(ranks) for ranks in process_sets]
            hvd.init(process_sets=sets) if sets else hvd.init()
            PROCESS_SETS.update({tuple(s.ranks): s for s in sets})

    def process_set(self, ranks: list[int] | None) -> Any:
        """Horovod's process set of these ranks (the global one for None)."""
        if ranks is None or len(ranks) == self.hvd.size():
            return self.hvd.global_process_set
        if tuple(ranks) not in PROCESS_SETS:
            raise UserError("Horovod was started in this process before the process set "
                            f"{ranks} existed; run one pipeline layout per process")
        return PROCESS_SETS[tuple(ranks)]

    def build_model(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
                    model: Any = None, sample: np.ndarray | None = None) -> Any:
        """The whole model, built with the recipe's seed (the same on every rank): the user's
        `model` (a model of this framework, or a factory of one), model.builder's, or the
        built-in model.name. `input_shape` is what the model sees (channels first with
        model.channels_first). A user's model is run once on `sample` (a few training inputs,
        as stored): a failure is one line with the likely fix, and outputs that are
        probabilities (a softmax) are detected unless model.output says what they are."""
        from hvdkit.models.builders import call_model_builder
        from hvdkit.models.usermodel import CHANNELS_FIRST_FRAMEWORKS, resolve_output

        self.channels_first = recipe.model.channels_first and \
            self.framework in CHANNELS_FIRST_FRAMEWORKS
        config = replace(recipe.model, channels_first=self.channels_first)
        self.configure_precision(recipe.train.precision, recipe.train.compile,
                                 config.memory_format)
        self.seed(recipe.train.seed)
        what = "the model"
        if model is None and config.builder:
            what = f"model.builder {config.builder!r}"
            model = _one_line(lambda: call_model_builder(
                config, self.framework, input_shape, num_classes, recipe.folder),
                what, input_shape)
        outputs = "logits" if config.output == "auto" else config.output
        if model is None:
            built = self.builtin_model(config, input_shape, num_classes)
        else:
            built = _one_line(lambda: self.user_model(model, input_shape, num_classes, what),
                              what, input_shape)
            if config.output == "auto" and sample is not None:
                outputs = resolve_output("auto", self.probe(built, sample, what), num_classes,
                                         what)
                if outputs == "probabilities" and self.hvd.rank() == 0:
                    print(f"[hvdkit] {what} outputs probabilities (its rows sum to 1: a "
                          "softmax); training on their log, which is cross-entropy exactly "
                          "(model.output says so instead of detecting it)", flush=True)
        self.task = replace(self.task, outputs=outputs)
        if config.sync_batchnorm:
            self.synchronise_batchnorm(built)
        return built

    def configure_precision(self, precision: str, compile: bool, memory_format: str) -> None:
        """train.precision, train.compile and model.memory_format, taken before the model is
        built (a Keras dtype policy must be set first)."""
        self.precision, self.compile, self.memory_format = precision, compile, memory_format

    @abstractmethod
    def synchronise_batchnorm(self, model: Any) -> None:
        """model.sync_batchnorm: the model's BatchNorm layers normalise by the global batch's
        moments while training (adapters/<framework>/batchnorm.py)."""

    @abstractmethod
    def seed(self, seed: int) -> None:
        """Seed the framework's generators (initial weights, dropout)."""

    @abstractmethod
    def builtin_model(self, config: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
        """The catalogued model config.name (hvdkit.models.catalogue), of this framework."""

    @abstractmethod
    def user_model(self, model: Any, input_shape: tuple[int, ...], num_classes: int,
                   what: str) -> Any:
        """`model` if it is this framework's, what it builds if it is a factory; anything
        else (another framework's model included) is a one-line UserError naming `what`."""

    @abstractmethod
    def probe(self, model: Any, sample: np.ndarray, what: str) -> np.ndarray:
        """The model's outputs on `sample` in evaluation mode, changing nothing; a failure is
        a one-line UserError with the likely fix."""

    @abstractmethod
    def parameter_keys(self, layer: Any = None) -> list[int]:
        """Identities of the trainable parameters of `layer` (None: of the kept model, in the
        order of `gradients_as_numpy`): the same object gives the same key, so weights that
        layers share can be found."""

    @abstractmethod
    def model_layers(self, model: Any) -> list[Any]:
        """The model's layers in order, for a cut into parts (placement, pipeline stages)."""

    @abstractmethod
    def layer_has_params(self, layer: Any) -> bool: ...

    @abstractmethod
    def profile_layers(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                       timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        """Per layer: parameter count, output feature shape, and (if `timed`) the seconds of
        its forward and backward on `rows` samples, leaving the layer unchanged."""

    @abstractmethod
    def keep(self, parts: list[list[Any]], devices: list[str]) -> None:
        """Keep these layers as this rank's model, part i on `devices[i]` (any spelling,
        hvdkit.parallel.placement). A single part holding one layer is kept as it is."""

    @abstractmethod
    def keep_chunks(self, chunks: list[list[Any]], device: str) -> None:
        """Keep these layer lists as this rank's chunks of the model (a pipeline's virtual
        stages), each run on its own by `forward(..., chunk=k)`, all on `device`."""

    @abstractmethod
    def make_optimizer(self, config: OptimizerConfig) -> None:
        """The optimizer over the kept model's parameters."""

    @abstractmethod
    def make_exchange(self, plan: ExchangePlan) -> GradientExchange:
        """This framework's exchange object for `plan` (adapters/<framework>/exchange.py)."""

    def use_exchange(self, plan: ExchangePlan) -> GradientExchange:
        """Combine the replicas' gradients as `plan` says from the next step on (after
        `make_optimizer`: the exchange takes the optimizer over)."""
        self.exchange = self.make_exchange(plan)
        self.exchange.attach(self)
        return self.exchange

    def configure_data(self, task: Task, input_dtype: str, normalization: Any = None) -> None:
        """What the data is: the task the model is trained for, the inputs' dtype, and the
        (mean, std) that uint8 images are normalised by on the device (None: as they are)."""
        self.task = task
        self.input_dtype = input_dtype
        self.input_normalization = normalization

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """Run in the data prefetch thread, ahead of the step: the batch as `train_step` and
        `eval_step` take it best (the framework's tensors, already on their devices). The
        default hands numpy on; the steps take either."""
        return x, y

    @abstractmethod
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, accumulation: int) -> Any:
        """Forward and backward over `accumulation` micro-batches, the exchange, the update.
        Returns this step's metrics on the device (see `read_metrics`)."""

    @abstractmethod
    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        """Steps' metrics (`train_step`'s results) as numpy rows of the task's step_metrics."""

    @abstractmethod
    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The task's eval sums over this batch (`Task.eval_sums`)."""


class PipelineStageOps(ABC):
    """Role of a pipeline stage (hvdkit.parallel.pipeline_step): configured with one call,
    then micro-batch operations per chunk of the kept model."""

    def configure_stage(self, split_backward: bool, first_stage: bool, tied: Any) -> None:
        """Make this adapter one stage: `split_backward` for zb-h1's B/W split; the data's
        layout (model.channels_first) applies to the first stage's inputs only; `tied` sums
        the gradients of weights shared with other stages (None: none)."""
        self.split_backward = split_backward
        if not first_stage:
            self.channels_first = False
        self.tied = tied

    @abstractmethod
    def zero_grad(self, lr: float) -> None:
        """Start a step: gradients to zero, the learning rate set."""

    @abstractmethod
    def forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None, scale: float,
                input_grad: bool, chunk: int = 0) -> np.ndarray:
        """A micro-batch forward through kept chunk `chunk` (0: the whole kept model), keeping
        what backward needs (and the input's gradient where `input_grad`). Without labels: the
        output (numpy). With labels (the model's last chunk): the micro-batch's [mean loss,
        correct], after taking `loss × scale` as what backward differentiates."""

    @abstractmethod
    def backward(self, mb: int, grad: np.ndarray | None, chunk: int = 0) -> np.ndarray | None:
        """A micro-batch backward (accumulating the weights' gradients, unless
        `split_backward`); the input's gradient, or None where forward was not asked for it."""

    @abstractmethod
    def backward_weights(self, mb: int, chunk: int = 0) -> None:
        """With `split_backward`: accumulate the weights' gradients of a micro-batch whose
        `backward` has run, and free what it kept."""

    @abstractmethod
    def apply_gradients(self) -> None:
        """After the last backward: the exchange combines the replicas' gradients and the
        optimizer steps."""

    @abstractmethod
    def infer(self, inputs: np.ndarray, chunk: int = 0) -> np.ndarray:
        """The kept model's (or chunk's) output in evaluation mode."""

    @abstractmethod
    def output_sums(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The task's eval sums for outputs computed by `infer` (a pipeline's last stage)."""


class ExchangeHooks(ABC):
    """Role of the gradient exchanges (hvdkit.parallel.exchange, .ps, and each framework's
    exchange.py): the local update and the gradients and parameters as numpy."""

    @abstractmethod
    def optimizer_step(self) -> None:
        """The optimizer's update with the gradients as they are now."""

    @abstractmethod
    def gradients_as_numpy(self) -> list[np.ndarray]:
        """The accumulated gradients of the kept parameters, in order."""

    @abstractmethod
    def set_gradients(self, arrays: list[np.ndarray]) -> None: ...

    @abstractmethod
    def assign_parameters(self, arrays: list[np.ndarray]) -> None: ...

    @abstractmethod
    def parameters_as_numpy(self) -> list[np.ndarray]:
        """The kept trainable parameters, in order."""

    @abstractmethod
    def sum_tied(self) -> None:
        """Sum, across the pipeline stages that share them, the gradients of tied weights (a
        no-op without any)."""

    @abstractmethod
    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (its shard's alone under ZeRO-1)."""


class StateAndCollectives(ABC):
    """Role of checkpoints, elastic training and the trainer's metrics: the state as numpy,
    broadcasts and small allreduces."""

    @abstractmethod
    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        """Combine a small float array across all ranks (`average` or `sum`). A `name` makes
        ranks match by name, not by call count (needed once a rank may have joined)."""

    @abstractmethod
    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """The root's picklable `obj`, on every rank."""

    @abstractmethod
    def broadcast_state(self, root_rank: int = 0) -> None:
        """Make every rank's parameters and optimizer state equal to the root's."""

    @abstractmethod
    def average_statistics(self) -> None:
        """A collective: the kept model's running statistics (BatchNorm's mean and variance)
        averaged over the replicas, so that an evaluation, a checkpoint and an export see one
        model, not each rank's own."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The kept model, optimizer and framework RNG state as numpy and plain Python."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...

    def join(self) -> None:
        """Uneven data: wait until every rank is done, answering their allreduces with zeros."""
        self.hvd.join()

    def elastic_state(self, **values: Any) -> Any:
        """A Horovod elastic state with the model, the optimizer and `values` as attributes."""
        raise UserError(f"elastic training is not available for {self.framework}")

    def elastic_run(self, func: Any) -> Any:
        """`func(state)` wrapped by the framework's `hvd.elastic.run`."""
        return self.hvd.elastic.run(func)


def _one_line(build: Any, what: str, input_shape: tuple[int, ...]) -> Any:
    """`build()`, its failure (the user's code raising) one UserError line, so a worker exits 2
    with it, not a traceback."""
    try:
        return build()
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{what} failed to build a model for inputs of shape "
                        f"{tuple(input_shape)}: {type(exc).__name__}: {first}") from None
