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
from hvdkit.adapters.tensorflow import losses, usermodel
from hvdkit.adapters.tensorflow.inputs import normalize
from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.adapters.tensorflow.placement import profile_layers
from hvdkit.adapters.tensorflow.state import keras_elastic_state
from hvdkit.config import OptimizerConfig
from hvdkit.runtime.devices import device_for
from hvdkit.runtime.world import default_threads, pick_gpu


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    # Keras applies weight decay decoupled from the gradient (AdamW-style), unlike torch's L2.
    decay = config.weight_decay or None
    if config.name == "sgd":
        return keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum,
                                    weight_decay=decay)
    return keras.optimizers.Adam(learning_rate=config.lr, weight_decay=decay)

class TensorFlowAdapter(Adapter):
    framework = "tensorflow"

    def __init__(self) -> None:
        super().__init__()
        import horovod.tensorflow as hvd

        self.hvd = hvd
        self.device = "/CPU:0"
        self._saved: dict[tuple[int, int], tuple[Any, ...]] = {}  # by (micro-batch, chunk)
        self._reduce = _unchanged  # the ring's grouped allreduce, once installed
        self.sharded: Any = None  # ZeRO-1's ZeroExchange, once installed
        self.powersgd: Any = None  # a PowerSGDExchange, once installed

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

    def builtin_model(self, config: Any, input_shape: tuple[int, ...],
                      num_classes: int) -> keras.Model:
        return MODELS.get(config.name)(config, input_shape, num_classes)

    def user_model(self, model: Any, input_shape: tuple[int, ...], num_classes: int,
                   what: str) -> keras.Model:
        return usermodel.as_model(model, input_shape, num_classes, what)

    def probe(self, model: keras.Model, sample: np.ndarray, what: str) -> np.ndarray:
        return usermodel.probe(model, sample, self.device, self.channels_first, what)

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
        self._grads_fn = tf.function(self._local_grads, autograph=False,
                                     reduce_retracing=True)
        self._apply_fn = tf.function(self._apply, autograph=False)
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
        return x

    def make_optimizer(self, config: OptimizerConfig) -> None:
        self.optimizer = make_optimizer(config)
        self.optimizer.build(self.trainable)

    def ring_reducer(self, op: str, compression: str, process_set_ranks: list[int] | None,
                     passes: int) -> float:
        hvd = self.hvd
        codec = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none
        reduce_op = {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}[op]
        process_set = self.process_set(process_set_ranks)

        def reduce(grads: list[tf.Tensor]) -> list[tf.Tensor]:
            return hvd.grouped_allreduce(grads, op=reduce_op, compression=codec,
                                         process_set=process_set)

        self._reduce = reduce
        # The bytes Horovod is handed per step: each gradient as the compressor leaves it.
        return float(sum(int(np.prod(v.shape)) * codec.compress(tf.zeros((), v.dtype))[0]
                         .dtype.size for v in self.trainable))

    def zero_reducer(self, op: str, compression: str,
                     process_set_ranks: list[int] | None) -> Any:
        from hvdkit.adapters.tensorflow.zero import ZeroExchange

        self.sharded = ZeroExchange(self.trainable, self.optimizer, self.hvd,
                                    self.process_set(process_set_ranks), op, compression)
        self.optimizer = self.sharded.optimizer  # over this rank's shard alone
        return self.sharded.plan

    def powersgd_reducer(self, op: str, process_set_ranks: list[int] | None, rank: int,
                         warmup_steps: int) -> Any:
        from hvdkit.adapters.tensorflow.powersgd import PowerSGDExchange

        self.powersgd = PowerSGDExchange(self.trainable, self.optimizer, self.hvd,
                                         self.process_set(process_set_ranks), op, rank,
                                         warmup_steps)
        return self.powersgd.plan

    def optimizer_state_bytes(self) -> int:
        from hvdkit.adapters.tensorflow.zero import optimizer_state_bytes

        return optimizer_state_bytes(self.optimizer)

    def _compressing(self) -> bool:
        """PowerSGD past its warm-up (a Python value: a step traces once per value)."""
        return self.powersgd is not None and self.powersgd.compressing

    def _apply(self, grads: list[tf.Tensor], compressing: bool) -> None:
        """Combine the replicas' gradients and update (graph-safe; the learning rate is set)."""
        if self.sharded is not None:
            self.sharded.apply(grads)
            return
        if self.powersgd is not None:
            grads = self.powersgd.reduce(grads, compressing)
        else:
            grads = self._reduce(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable, strict=True))

    def _stepped(self) -> None:
        if self.powersgd is not None:
            self.powersgd.done()

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
            step_grads = tape.gradient(scaled, self.trainable)
            grads = [g + s for g, s in zip(grads, step_grads, strict=True)]
            count = tf.cast(end - start, tf.float32)
            sums += tf.stack([loss * count, tf.cast(correct, tf.float32)])
        return sums / tf.cast(n, tf.float32), grads

    def _fused_step(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor, k: int,
                    compressing: bool) -> tf.Tensor:
        self.optimizer.learning_rate.assign(lr)
        metrics, grads = self._local_grads(x, y, k)
        self._apply(grads, compressing)
        return metrics

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float, accumulation: int) -> Any:
        if self.exchange.in_step:
            metrics = self._step(self._inputs(x), y, np.float32(lr), accumulation,
                                 self._compressing())
            self._stepped()
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

    # -- a pipeline stage's micro-batches -------------------------------------------------

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
                    scaled = loss * scale  # inside the tape, or the tape cannot see it
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
                loss, correct = losses.loss_and_correct(self.task, h, labels)
                target = loss * scale
        self._saved[key] = (b_tape, w_tape, input_grad, target, h, layers)
        return h, loss, correct

    def _split_backward(self, key: tuple[int, int], grad: np.ndarray | None) -> Any:
        """B: the gradient back through the layers' inputs; keeps each weighted layer's output
        gradient for W."""
        b_tape, w_tape, input_grad, target, out, layers = self._saved.pop(key)
        g = (b_tape.gradient(target, out) if grad is None else tf.constant(grad))
        pending = []
        for index in reversed(range(len(layers))):
            layer, layer_in, layer_out = layers[index]
            if layer.trainable_weights:
                pending.append((layer, layer_out, g))
            if index or input_grad:
                g = b_tape.gradient(layer_out, layer_in, output_gradients=g)
        self._saved[key] = (w_tape, pending)
        return g.numpy() if input_grad else None

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

    def infer(self, inputs: np.ndarray, chunk: int = 0) -> np.ndarray:
        return self._eval_calls[chunk](self._chunk_inputs(inputs, chunk)).numpy()

    def output_sums(self, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return losses.eval_sums(self.task, tf.constant(outputs),
                                tf.constant(labels)).numpy().astype(np.float64)

    # -- what the gradient exchanges use --------------------------------------------------

    def optimizer_step(self) -> None:
        if self.tied is not None:  # shared with other pipeline stages: their parts summed
            grads = list(self._grads)
            for i in self.tied.indices:
                grad = np.array(grads[i], dtype=np.float32)
                self.tied.reduce_one(i, grad)
                grads[i] = tf.constant(grad)
            self._grads = grads
        self._apply_fn(self._grads, self._compressing())
        self._stepped()

    def gradients_as_numpy(self) -> list[np.ndarray]:
        return [g.numpy() for g in self._grads]

    def set_gradients(self, arrays: list[np.ndarray]) -> None:
        self._grads = [tf.constant(a) for a in arrays]

    def assign_parameters(self, arrays: list[np.ndarray]) -> None:
        for v, a in zip(self.trainable, arrays, strict=True):
            v.assign(a)
        self._parameters_changed()

    def _parameters_changed(self) -> None:
        """ZeRO-1's shard follows variables changed outside its step."""
        if self.sharded is not None:
            self.sharded.pull()

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.trainable]

    # -- collectives, state, fault tolerance ----------------------------------------------

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(tf.constant(values), op=reduce_op, name=name).numpy()

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=root_rank, name=name)

    def _all_variables(self) -> list[Any]:
        """What a broadcast makes equal: not ZeRO-1's shards, which differ by rank."""
        return [*self.variables, *([] if self.sharded else self.optimizer.variables)]

    def broadcast_state(self, root_rank: int = 0) -> None:
        self.hvd.broadcast_variables([v.value for v in self._all_variables()],
                                     root_rank=root_rank)
        self._parameters_changed()

    def state(self) -> dict[str, Any]:
        """Model and optimizer variables (the step counter included) and TF's global RNG. Under
        ZeRO-1 or PowerSGD a collective: the whole optimizer state, every rank's errors."""
        state = {"model": [v.numpy() for v in self.variables],
                 "optimizer": self.sharded.state_dict() if self.sharded else
                 [v.numpy() for v in self.optimizer.variables],
                 "rng": tf.random.get_global_generator().state.numpy()}
        if self.powersgd is not None:
            state["powersgd"] = self.powersgd.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        if self.sharded is not None:
            self.sharded.load_state_dict(state["optimizer"])
        for variable, value in zip(self._all_variables(),
                                   [*state["model"], *([] if self.sharded
                                                       else state["optimizer"])], strict=True):
            variable.assign(value)
        self._parameters_changed()
        if self.powersgd is not None and "powersgd" in state:
            self.powersgd.load_state_dict(state["powersgd"])
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


def _unchanged(grads: list[tf.Tensor]) -> list[tf.Tensor]:
    return grads


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
