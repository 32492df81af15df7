"""TensorFlow / Keras 3 mechanics: Horovod set-up, the kept model, the steps, the state.

One adapter serves every layout (hvdkit.parallel composes them). Where the exchange runs inside
`optimizer_step` (none, ring-allreduce), one `tf.function` does a whole step: the micro-batches'
gradients are summed, reduced in one `hvd.grouped_allreduce` over the replicas' process set
(the call `hvd.DistributedGradientTape` makes) and applied, so accumulation never holds more
than one micro-batch of activations. Pipeline stages run a `GradientTape` per micro-batch and
`tape.gradient(..., output_gradients=...)` with the gradient the next stage sent back (for
zb-h1, layer by layer under two tapes, so the input's and the weights' gradients come apart);
each part's computation runs under `tf.device`; virtual stages keep one compiled call per chunk.
Keras 3 variables are not `tf.Variable`s: Horovod's
broadcasts get the underlying ones (`v.value`).
"""

from __future__ import annotations

import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.adapters.base import Adapter
from hvdkit.adapters.tensorflow import batchnorm, losses, usermodel
from hvdkit.adapters.tensorflow.exchange import make_exchange
from hvdkit.adapters.tensorflow.inputs import normalize
from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.adapters.tensorflow.optimizers import make_optimizer
from hvdkit.adapters.tensorflow.pipeline import StageOps
from hvdkit.adapters.tensorflow.placement import profile_layers
from hvdkit.adapters.tensorflow.precision import as_float32, set_policy
from hvdkit.adapters.tensorflow.state import keras_elastic_state
from hvdkit.config import OptimizerConfig
from hvdkit.parallel.exchange import ExchangePlan, GradientExchange
from hvdkit.runtime.devices import device_for
from hvdkit.runtime.world import default_threads, pick_gpu


class TensorFlowAdapter(StageOps, Adapter):
    framework = "tensorflow"

    def __init__(self) -> None:
        super().__init__()
        import horovod.tensorflow as hvd

        self.hvd = hvd
        self.device = "/CPU:0"
        self._saved: dict[tuple[int, int], tuple[Any, ...]] = {}  # by (micro-batch, chunk)

    # -- set-up ---------------------------------------------------------------------------

    def init(self, process_sets: list[list[int]], threads: int, device: str,
             exclusive_gpu: bool) -> tuple[int, ...]:
        hvd = self.hvd
        self.start_horovod(process_sets)
        self.threads = threads or default_threads(hvd.local_size())
        if not pin_threads(self.threads):
            self.threads = 0  # the runtime's own choice: all cores
            if hvd.rank() == 0:
                print("hvdkit: warning: TensorFlow's runtime started before hvdkit could pin "
                      "its threads (a keras.Model built before the Trainer starts it), so "
                      "train.threads is not applied; pass a factory (input_shape, "
                      "num_classes) -> model to have it applied", file=sys.stderr, flush=True)
        self.device = tf_device(device, hvd.local_rank(), hvd.local_size(),
                                shared_ok=not (exclusive_gpu and hvd.nccl_built()))
        return hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()

    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)

    def configure_precision(self, precision: str, compile: bool, memory_format: str) -> None:
        super().configure_precision(precision, compile, memory_format)
        set_policy(precision)  # before the model's layers are built

    def builtin_model(self, config: Any, input_shape: tuple[int, ...],
                      num_classes: int) -> keras.Model:
        return MODELS.get(config.name)(config, input_shape, num_classes)

    def user_model(self, model: Any, input_shape: tuple[int, ...], num_classes: int,
                   what: str) -> keras.Model:
        return usermodel.as_model(model, input_shape, num_classes, what)

    def probe(self, model: keras.Model, sample: np.ndarray, what: str) -> np.ndarray:
        return usermodel.probe(model, sample, self.device, self.channels_first, what)

    def synchronise_batchnorm(self, model: keras.Model) -> None:
        """Nothing to convert: hvdkit's ResNet builds SyncBatchNormalization layers from
        model.sync_batchnorm, and a Keras model of yours uses them itself."""

    def parameter_keys(self, layer: Any = None) -> list[int]:
        return [id(w) for w in (self.trainable if layer is None else layer.trainable_weights)]

    def model_layers(self, model: keras.Model) -> list[Any]:
        return list(model.layers)

    def layer_has_params(self, layer: Any) -> bool:
        return bool(layer.trainable_weights)

    def profile_layers(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                       timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        return profile_layers(layers, input_shape, rows, timed, self.input_dtype)

    def keep(self, parts: list[list[Any]], devices: list[str]) -> None:
        self.parts = parts
        self.devices = [device_for(d, "tensorflow") for d in devices]
        if len(devices) > 1:
            self.device = ",".join(self.devices)
        layers = [layer for part in parts for layer in part]
        # A weight two kept layers share (a tied embedding and head) is listed once.
        self.trainable = _unique([w for layer in layers for w in layer.trainable_weights])
        self.variables = _unique([w for layer in layers for w in layer.weights])
        self._index = {id(w): i for i, w in enumerate(self.trainable)}
        self._step = tf.function(self._fused_step, autograph=False, reduce_retracing=True)
        # train.compile: XLA over the forward and backward (Horovod's ops stay outside it).
        self._grads_call = tf.function(self._local_grads, autograph=False, jit_compile=True,
                                       reduce_retracing=True) if self.compile else \
            self._local_grads
        self._grads_fn = tf.function(self._grads_call, autograph=False,
                                     reduce_retracing=True)
        self._eval = tf.function(self._eval_step, autograph=False, reduce_retracing=True)
        self._set_chunks([(self.parts, self.devices)])

    def keep_chunks(self, chunks: list[list[Any]], device: str) -> None:
        self.keep([[layer for chunk in chunks for layer in chunk]], [device])
        self._set_chunks([([chunk], self.devices) for chunk in chunks])

    def _set_chunks(self, chunks: list[tuple[list[list[Any]], list[str]]]) -> None:
        """Each chunk's parts and devices, its compiled calls, and its trainable weights."""
        self.chunks = chunks
        self._train_calls = [tf.function(lambda x, c=c: self._call(x, True, c),
                                         reduce_retracing=True) for c in chunks]
        self._eval_calls = [tf.function(lambda x, c=c: self._call(x, False, c),
                                        reduce_retracing=True) for c in chunks]
        self._chunk_weights = [_unique([w for part in parts for layer in part
                                        for w in layer.trainable_weights])
                               for parts, _ in chunks]

    def _inputs(self, x: Any) -> Any:
        """A batch of inputs as the model takes it: (N, C, H, W) with model.channels_first."""
        x = normalize(x, self.input_normalization)
        return tf.transpose(x, (0, 3, 1, 2)) if self.channels_first and len(x.shape) == 4 else x

    def _chunk_inputs(self, inputs: np.ndarray, chunk: int) -> tf.Tensor:
        """A chunk's inputs: the batch's layout for this stage's first chunk, activations as
        they came for its later chunks (virtual stages)."""
        return tf.constant(self._inputs(inputs) if chunk == 0 else inputs)

    def _call(self, x: tf.Tensor, training: bool,
              chunk: tuple[list[list[Any]], list[str]] | None = None) -> tf.Tensor:
        parts, devices = chunk or (self.parts, self.devices)
        for part, device in zip(parts, devices, strict=True):
            with tf.device(device):
                for layer in part:
                    x = layer(x, training=training)
        return as_float32(x)

    def make_optimizer(self, config: OptimizerConfig) -> None:
        self.optimizer = make_optimizer(config)
        self.optimizer.build(self.trainable)
        self._apply_local = tf.function(
            lambda grads: self.optimizer.apply_gradients(zip(grads, self.trainable, strict=True)),
            autograph=False)

    def make_exchange(self, plan: ExchangePlan) -> GradientExchange:
        return make_exchange(plan)

    def optimizer_state_bytes(self) -> int:
        from hvdkit.adapters.tensorflow.zero import optimizer_state_bytes

        return optimizer_state_bytes(self.optimizer)

    # -- one step on the whole kept model -------------------------------------------------

    def _local_grads(self, x: tf.Tensor, y: tf.Tensor,
                     k: int) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """[mean loss, accuracy] and the gradients summed over `k` micro-batches."""
        n = tf.shape(x)[0]
        grads = [tf.zeros_like(v) for v in self.trainable]
        sums = tf.zeros(2)
        for i in range(k):
            start, end = n * i // k, n * (i + 1) // k
            xb, yb = x[start:end], y[start:end]
            with tf.GradientTape() as tape:
                out = self._call(xb, True)
                loss, correct = losses.loss_and_correct(self.task, out, yb)
                scaled = loss / k  # inside the tape, or the tape cannot see it
                if self.exchange.graph_guard is not None and self.precision == "fp16":
                    scaled = scaled * self.exchange.graph_guard.scale
            step_grads = tape.gradient(scaled, self.trainable)
            grads = [g + s for g, s in zip(grads, step_grads, strict=True)]
            count = tf.cast(end - start, tf.float32)
            sums += tf.stack([loss * count, tf.cast(correct, tf.float32)])
        return sums / tf.cast(n, tf.float32), grads

    def _fused_step(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor, k: int,
                    compressing: bool) -> tf.Tensor:
        self.optimizer.learning_rate.assign(lr)
        metrics, grads = self._grads_call(x, y, k)
        self.exchange.apply(grads, compressing)
        return metrics

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, accumulation: int) -> Any:
        if self.exchange.in_step:
            metrics = self._step(self._inputs(x), y, np.float32(lr), accumulation,
                                 self.exchange.compressing)
            self.exchange.after_step()
            return metrics
        self.optimizer.learning_rate.assign(lr)
        metrics, self._grads = self._grads_fn(self._inputs(x), y, accumulation)
        self.exchange.step()
        return metrics

    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        return tf.stack(handles).numpy().astype(np.float64)

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """In the prefetch thread: the batch as tensors, the inputs on the first part's device
        and the labels on the last's (to a GPU: copied while the previous step runs)."""
        with tf.device(self.devices[0]):
            x = tf.identity(x)
        with tf.device(self.devices[-1]):
            return x, tf.identity(y)

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return losses.eval_sums(self.task, self._call(x, False), y)

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._eval(self._inputs(x), y).numpy().astype(np.float64)

    # -- what the gradient exchanges use --------------------------------------------------

    def optimizer_step(self) -> None:
        self._apply_local(self._grads)

    def sum_tied(self) -> None:
        if self.tied is None:
            return
        grads = list(self._grads)
        for i in self.tied.indices:
            grad = np.array(grads[i], dtype=np.float32)
            self.tied.reduce_one(i, grad)
            grads[i] = tf.constant(grad)
        self._grads = grads

    def accumulated_gradients(self) -> list[Any]:
        """The gradients a step accumulated, as the exchange combines them."""
        return self._grads

    def gradients_as_numpy(self) -> list[np.ndarray]:
        return [g.numpy() for g in self._grads]

    def set_gradients(self, arrays: list[np.ndarray]) -> None:
        self._grads = [tf.constant(a) for a in arrays]

    def assign_parameters(self, arrays: list[np.ndarray]) -> None:
        for v, a in zip(self.trainable, arrays, strict=True):
            v.assign(a)
        self.exchange.parameters_changed()

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.trainable]

    # -- collectives, state, fault tolerance ----------------------------------------------

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(tf.constant(values), op=reduce_op, name=name).numpy()

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=root_rank, name=name)

    def average_statistics(self) -> None:
        ranks = self.exchange.plan.ranks
        if ranks is not None and len(ranks) == 1:  # one replica (a pipeline stage): as it is
            return
        batchnorm.average_statistics(self.variables, self.hvd, self.process_set(ranks))

    def broadcast_state(self, root_rank: int = 0) -> None:
        variables = [*self.variables, *self.exchange.optimizer_variables()]
        self.hvd.broadcast_variables([v.value for v in variables], root_rank=root_rank)
        self.exchange.parameters_changed()

    def state(self) -> dict[str, Any]:
        """Model and optimizer variables (the step counter included), TF's global RNG and the
        exchange's own state; a collective under ZeRO-1 and PowerSGD."""
        return {"model": [v.numpy() for v in self.variables],
                "optimizer": self.exchange.optimizer_state(),
                "rng": tf.random.get_global_generator().state.numpy(),
                **self.exchange.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.exchange.load_optimizer_state(state["optimizer"])
        for variable, value in zip(self.variables, state["model"], strict=True):
            variable.assign(value)
        self.exchange.parameters_changed()
        self.exchange.load_state(state)
        if "rng" in state:
            tf.random.get_global_generator().state.assign(state["rng"])

    def elastic_state(self, **values: Any) -> Any:
        """Horovod's elastic state: the Keras model and optimizer, and `values` (the position)."""
        return keras_elastic_state(self, values)

    def elastic_run(self, func: Any) -> Any:
        import horovod.tensorflow.elastic as elastic
        from horovod.common.exceptions import HorovodInternalError

        def guarded(state: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return func(state, *args, **kwargs)
            except tf.errors.UnknownError as exc:
                # Horovod's wrapper converts only HorovodAllreduce/Allgather/Broadcast errors
                # and silently swallows others (a grouped allreduce's): convert them all here.
                if "Horovod" in str(exc):
                    raise HorovodInternalError(str(exc).splitlines()[0]) from exc
                raise

        return elastic.run(guarded)


def _unique(variables: list[Any]) -> list[Any]:
    seen: set[int] = set()
    return [v for v in variables if not (id(v) in seen or seen.add(id(v)))]


def pin_threads(threads: int) -> bool:
    """Set TensorFlow's intra- and inter-op threads; False where its runtime has already
    started (creating a variable, e.g. building a Keras model, starts it), after which they
    cannot change ("Intra op parallelism cannot be modified after initialization")."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


def tf_device(device: str, local_rank: int, local_size: int, shared_ok: bool) -> str:
    """`/CPU:0`, or `/GPU:0` with only this rank's GPU visible (runtime.world.pick_gpu) and its
    memory grown on demand, so that the ranks of a host do not take each other's GPUs.
    Must run before TensorFlow's runtime starts."""
    gpus = tf.config.list_physical_devices("GPU")
    gpu = pick_gpu(device, local_rank, local_size, len(gpus), shared_ok)
    try:
        if gpu is None:
            if gpus:
                tf.config.set_visible_devices([], "GPU")
            return "/CPU:0"
        tf.config.set_visible_devices(gpus[gpu], "GPU")
        tf.config.experimental.set_memory_growth(gpus[gpu], True)
    except RuntimeError:  # the runtime already started (a model built first): as it is
        return "/CPU:0" if gpu is None else f"/GPU:{gpu}"
    return "/GPU:0"
