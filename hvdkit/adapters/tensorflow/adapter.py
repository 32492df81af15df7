"""TensorFlow mechanics: a `tf.function` step, Horovod allreduce of the tape's gradients.

Keras 3 variables are not `tf.Variable`s; Horovod's broadcasts get the underlying ones
(`v.value`). Gradients of the micro-batches are summed, then reduced in one
`hvd.grouped_allreduce` — the call `hvd.DistributedGradientTape` makes — so that gradient
accumulation never holds more than one micro-batch of activations.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.recipe import OptimizerConfig, Recipe
from hvdkit.world import World, default_threads, pick_gpu


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    # Keras applies weight decay decoupled from the gradient (AdamW-style), unlike torch's L2.
    decay = config.weight_decay or None
    if config.name == "sgd":
        return keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum,
                                    weight_decay=decay)
    return keras.optimizers.Adam(learning_rate=config.lr, weight_decay=decay)


def tf_device(device: str, local_rank: int, local_size: int, shared_ok: bool) -> str:
    """`/CPU:0`, or `/GPU:0` with only this rank's GPU visible (hvdkit.world.pick_gpu) and its
    memory grown on demand, so that the ranks of a host do not take each other's GPUs.
    Must run before TensorFlow's runtime starts."""
    gpus = tf.config.list_physical_devices("GPU")
    gpu = pick_gpu(device, local_rank, local_size, len(gpus), shared_ok)
    if gpu is None:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return "/CPU:0"
    tf.config.set_visible_devices(gpus[gpu], "GPU")
    tf.config.experimental.set_memory_growth(gpus[gpu], True)
    return "/GPU:0"


class TensorFlowAdapter:
    framework = "tensorflow"
    collective_state = False  # rank 0 holds the whole model

    def __init__(self) -> None:
        import horovod.tensorflow as hvd

        self.hvd = hvd
        self.threads = 0
        self.device = "/CPU:0"
        self.ps: Any = None  # a ParameterServer when parallel.sync is ps

    def init(self, threads: int = 0, device: str = "auto") -> World:
        self.hvd.init()
        world = World.from_horovod(self.hvd)
        self.threads = threads or default_threads(world.local_size)
        # Must run before TensorFlow's runtime starts, i.e. before the first op.
        tf.config.threading.set_intra_op_parallelism_threads(self.threads)
        tf.config.threading.set_inter_op_parallelism_threads(self.threads)
        self.device = tf_device(device, world.local_rank, world.local_size,
                                shared_ok=not self.hvd.nccl_built())
        return world

    def build(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
              model: Any = None) -> None:
        keras.utils.set_random_seed(recipe.train.seed)
        if model is None:
            model = MODELS.get(recipe.model.name)(recipe.model, input_shape, num_classes)
        elif not isinstance(model, keras.Model):
            model = model(input_shape, num_classes)
        self.model = model
        self.optimizer = make_optimizer(recipe.optimizer)
        self.optimizer.build(model.trainable_variables)
        self.accumulation = recipe.parallel.accumulation
        self.reduce_op = {"average": self.hvd.Average, "sum": self.hvd.Sum,
                          "adasum": self.hvd.Adasum}[recipe.parallel.reduction]
        self.compression = (self.hvd.Compression.fp16 if recipe.parallel.compression == "fp16"
                            else self.hvd.Compression.none)
        spec = [tf.TensorSpec((None, *input_shape), tf.float32), tf.TensorSpec((None,), tf.int64)]
        # The steps are plain Python with static loops: AutoGraph's rewrite is not needed.
        self._train = tf.function(self._train_step, autograph=False,
                                  input_signature=[*spec, tf.TensorSpec((), tf.float32)])
        self._eval = tf.function(self._eval_step, autograph=False, input_signature=spec)
        if recipe.parallel.sync == "ps":
            from hvdkit.parallel.ps import ParameterServer

            self.ps = ParameterServer(self.hvd.size(), recipe.parallel.compression)
            self.ps_average = recipe.parallel.reduction == "average"
            self._grads = tf.function(self._local_grads, autograph=False, input_signature=spec)
            self._apply = tf.function(self._apply_step, autograph=False)

    def _train_step(self, x: tf.Tensor, y: tf.Tensor, lr: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self.optimizer.learning_rate.assign(lr)
        loss, correct, grads = self._local_grads(x, y)
        grads = self.hvd.grouped_allreduce(grads, op=self.reduce_op, compression=self.compression)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss, correct

    def _apply_step(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.optimizer.learning_rate.assign(lr)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))

    def _local_grads(self, x: tf.Tensor, y: tf.Tensor) -> tuple[Any, Any, list[tf.Tensor]]:
        """This rank's loss, correct count and gradients, summed over the micro-batches."""
        variables = self.model.trainable_variables
        k = self.accumulation
        n = tf.shape(x)[0]
        grads = [tf.zeros_like(v) for v in variables]
        loss_sum = tf.constant(0.0)
        correct = tf.constant(0, tf.int64)
        for i in range(k):
            start, end = n * i // k, n * (i + 1) // k
            xb, yb = x[start:end], y[start:end]
            with tf.GradientTape() as tape:
                logits = self.model(xb, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
                scaled = loss / k  # inside the tape, or the tape cannot see it
            step_grads = tape.gradient(scaled, variables)
            grads = [g + s for g, s in zip(grads, step_grads, strict=True)]
            loss_sum += loss
            correct += tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == yb, tf.int64))
        return loss_sum / k, correct, grads

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self.model(x, training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        loss = tf.reduce_sum(losses)
        return loss, tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == y, tf.int64))

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, float]:
        if self.ps is not None:
            loss, correct = self._ps_step(x, y, lr)
        else:
            loss, correct = self._train(x, y, np.float32(lr))
        return {"loss": float(loss), "accuracy": int(correct) / len(y)}

    def _ps_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[Any, Any]:
        """Gradients to rank 0, its optimizer step, parameters back (hvdkit.parallel.ps)."""
        from hvdkit.parallel.ps import flatten, unflatten

        loss, correct, grads = self._grads(x, y)
        variables = self.model.trainable_variables
        total = self.ps.push(flatten([g.numpy() for g in grads]), average=self.ps_average)
        if total is not None:
            self._apply([tf.constant(g) for g in unflatten(total, variables)],
                        tf.constant(lr, tf.float32))
        flat = flatten([v.numpy() for v in variables])
        for v, value in zip(variables, unflatten(self.ps.pull(flat), variables), strict=True):
            v.assign(value)
        return loss, correct

    def comm_seconds(self) -> float:
        """Seconds in the parameter server's exchange; NaN for ring-allreduce (inside the
        compiled step, where only Horovod's timeline sees it)."""
        return self.ps.seconds if self.ps is not None else float("nan")

    def stage(self, x: np.ndarray, y: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """The input path's last step, run in the prefetch thread: the batch as tensors on this
        rank's device (on a GPU, copied there while the previous step runs)."""
        with tf.device(self.device):
            return tf.identity(x), tf.identity(y)

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        loss, correct = self._eval(x, y)
        return {"loss_sum": float(loss), "correct": int(correct), "count": len(y)}

    def _variables(self) -> list[Any]:
        return [*self.model.variables, *self.optimizer.variables]

    def broadcast_state(self, root_rank: int = 0) -> None:
        self.hvd.broadcast_variables([v.value for v in self._variables()], root_rank=root_rank)

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        reduce_op = self.hvd.Average if op == "average" else self.hvd.Sum
        return self.hvd.allreduce(tf.constant(values), op=reduce_op, name=name).numpy()

    def state(self) -> dict[str, Any]:
        """Model and optimizer variables (the step counter included) and TF's global RNG."""
        return {"model": [v.numpy() for v in self.model.variables],
                "optimizer": [v.numpy() for v in self.optimizer.variables],
                "rng": tf.random.get_global_generator().state.numpy()}

    def load_state(self, state: dict[str, Any]) -> None:
        for variable, value in zip(self._variables(), [*state["model"], *state["optimizer"]],
                                   strict=True):
            variable.assign(value)
        if "rng" in state:
            tf.random.get_global_generator().state.assign(state["rng"])

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        """Rank `root_rank`'s picklable `obj` on every rank (`name`: the same on all ranks)."""
        return self.hvd.broadcast_object(obj, root_rank=root_rank, name=name)

    def join(self) -> None:
        """Wait, answering the others' allreduces with zeros, until every rank has joined."""
        self.hvd.join()

    def elastic_state(self, **values: Any) -> Any:
        """Horovod's elastic state: the Keras model and optimizer, and `values` (the position)."""
        return _keras_state(self, values)

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

    def parameters_as_numpy(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.trainable_variables]


def _keras_state(adapter: TensorFlowAdapter, values: dict[str, Any]) -> Any:
    """An elastic object state that also carries the Keras model and optimizer.

    Horovod's `TensorFlowKerasState` expects `tf.Variable`s; Keras 3 variables are not, so the
    snapshot goes through the adapter's numpy `state()` and the sync through `v.value`.
    """
    import horovod.tensorflow.elastic as elastic

    class KerasState(elastic.ObjectState):
        def __init__(self) -> None:
            self._snapshot = adapter.state()
            super().__init__(bcast_object=adapter.hvd.broadcast_object,
                             get_rank=adapter.hvd.rank, **values)

        def save(self) -> None:
            self._snapshot = adapter.state()
            super().save()

        def restore(self) -> None:
            adapter.load_state(self._snapshot)
            super().restore()

        def sync(self) -> None:
            adapter.broadcast_state(root_rank=0)
            super().sync()

    return KerasState()
