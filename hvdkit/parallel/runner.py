"""The pipeline adapter's framework-free half: layout, schedule execution, metrics.

`PipelineAdapter` implements the trainer's adapter protocol for a model cut into stages, one
stage per rank (hvdkit.parallel.pipeline), so the one training loop drives pipelines unchanged:
`train_step` runs one batch's schedule and returns the loss and accuracy, which non-last stages
receive from the last. A framework's subclass (hvdkit/adapters/<framework>/pipeline.py) supplies
only the mechanics: build a stage, run a micro-batch forward or backward, apply gradients.

Ranks: rank = replica × stages + stage. One MPI communicator per pipeline carries activations
and gradients (mpi4py, hvdkit.parallel.p2p); with d > 1 replicas, the ranks of each stage form a
Horovod process set in which that stage's gradients are averaged.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hvdkit.errors import UserError
from hvdkit.parallel.p2p import BACKWARD, FORWARD, Neighbours
from hvdkit.parallel.pipeline import Layout, Op, group_layers, make_layout, plan_stages, schedule
from hvdkit.recipe import ParallelConfig, Recipe
from hvdkit.world import World, default_threads

# The stage process sets this process started Horovod with, by their ranks.
_STAGE_SETS: dict[tuple[int, ...], Any] = {}


class PipelineAdapter:
    """Adapter protocol for pipeline (and placement) runs; subclasses add one framework."""

    framework = ""
    collective_state = True  # each stage's state lives on its own ranks

    def __init__(self, parallel: ParallelConfig) -> None:
        self.parallel = parallel
        self.threads = 0
        self.device = "cpu"
        self.hvd: Any = None  # set by the subclass: its horovod.<framework> module

    # -- framework hooks ------------------------------------------------------------------

    def _set_up(self, threads: int, device: str, shared_ok: bool) -> str:
        """Pin intra-op threads and choose this rank's device for train.device (auto, cpu,
        gpu; hvdkit.world.pick_gpu); return its name. `device` empty: leave the devices as
        they are (parallel.placement names them)."""
        raise NotImplementedError

    def _layers(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
                model: Any) -> list[Any]:
        """The model's layers in order (built with the recipe's seed, the same on every rank)."""
        raise NotImplementedError

    def _has_params(self, layer: Any) -> bool:
        raise NotImplementedError

    def _profile(self, layers: list[Any], input_shape: tuple[int, ...], rows: int,
                 timed: bool) -> tuple[list[float], list[tuple[int, ...]], list[float]]:
        """Per layer: parameter count, output feature shape, and (if `timed`) the seconds of
        its forward and backward on a micro-batch of `rows`, leaving the layer unchanged."""
        raise NotImplementedError

    def _make_stage(self, groups: list[list[Any]], devices: list[str], recipe: Recipe) -> None:
        """Keep these layer groups as this rank's stage (parts on `devices`), and an optimizer."""
        raise NotImplementedError

    def _zero_grad(self, lr: float) -> None: ...

    def _forward(self, mb: int, inputs: np.ndarray, labels: np.ndarray | None,
                 scale: float) -> Any:
        """Run a micro-batch forward and keep what backward needs. Non-last stages return the
        output (numpy); the last returns (loss, correct) after computing `loss × scale`."""
        raise NotImplementedError

    def _backward(self, mb: int, grad: np.ndarray | None) -> np.ndarray | None:
        """Backward of a micro-batch (accumulating gradients); returns the input's gradient."""
        raise NotImplementedError

    def _apply(self) -> None:
        """Average gradients over the stage's replicas (if any) and take an optimizer step."""
        raise NotImplementedError

    def _infer(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def parameters_as_numpy(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _assign(self, arrays: list[np.ndarray]) -> None:
        raise NotImplementedError

    # -- set-up ---------------------------------------------------------------------------

    def init(self, threads: int = 0, device: str = "auto") -> World:
        import os

        if self.parallel.stages > 1 and os.environ.get("HOROVOD_CONTROLLER") == "gloo":
            raise UserError("a pipeline (parallel.stages > 1) needs an MPI launch: mpi4py has no "
                            "Gloo transport; use --controller mpi")
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.layout: Layout = make_layout(self.comm.Get_rank(), self.comm.Get_size(),
                                          self.parallel.stages)
        layout = self.layout
        if not self.hvd.is_initialized():
            # Process sets are fixed at init (static): one per stage, holding its replicas.
            sets = ([self.hvd.ProcessSet(layout.stage_ranks(s)) for s in range(layout.stages)]
                    if layout.replicas > 1 and layout.stages > 1 else [])
            self.hvd.init(process_sets=sets) if sets else self.hvd.init()
            _STAGE_SETS.update({tuple(ps.ranks): ps for ps in sets})
        if self.hvd.size() != self.comm.Get_size():
            raise UserError("a pipeline needs Horovod's MPI controller: MPI sees "
                            f"{self.comm.Get_size()} ranks, Horovod {self.hvd.size()}")
        self.process_set = None
        if layout.replicas > 1 and layout.stages > 1:
            key = tuple(layout.stage_ranks(layout.stage))
            if key not in _STAGE_SETS:
                raise UserError("Horovod was started before this pipeline's process sets "
                                "existed; run one pipeline layout per process")
            self.process_set = _STAGE_SETS[key]
        self.pipe = Neighbours(self.comm.Split(layout.replica, layout.stage))
        self.stage_comm = self.comm.Split(layout.stage, layout.replica)
        self.threads = threads or default_threads(self.hvd.local_size())
        # Ranks may share a GPU unless the stage's replicas average over NCCL (one GPU each).
        shared_ok = layout.replicas == 1 or not self.hvd.nccl_built()
        if self.parallel.placement:  # explicit devices win over train.device
            self._set_up(self.threads, "", shared_ok)
            self.device = ",".join(self._devices())
        else:
            self.device = self._set_up(self.threads, device, shared_ok)
        return World(self.comm.Get_rank(), self.comm.Get_size(), self.hvd.local_rank(),
                     self.hvd.local_size(), data_rank=layout.replica, data_size=layout.replicas)

    @property
    def first(self) -> bool:
        return self.layout.stage == 0

    @property
    def last(self) -> bool:
        return self.layout.stage == self.layout.stages - 1

    def build(self, recipe: Recipe, input_shape: tuple[int, ...], num_classes: int,
              model: Any = None) -> None:
        p = self.parallel
        layers = self._layers(recipe, input_shape, num_classes, model)
        groups = group_layers([self._has_params(layer) for layer in layers])
        rows = max(1, recipe.train.batch_size // p.microbatches)  # a micro-batch, per replica
        params, shapes, seconds = self._profile(layers, input_shape, rows, p.split == "time")
        costs = [sum((seconds if p.split == "time" else params)[i] for i in g) for g in groups]
        # Stages cut the layer groups; placement then cuts this stage's groups into parts.
        plan = plan_stages(costs, p.stages, p.boundaries if p.stages > 1 else None)
        mine = plan.layers(self.layout.stage)
        out_shapes = [shapes[g[-1]] for g in groups]
        self.in_shape = tuple(input_shape) if mine.start == 0 else out_shapes[mine.start - 1]
        self.out_shape = out_shapes[mine.stop - 1]
        # Activation bytes per sample a held micro-batch keeps: every layer output of the stage.
        self.bytes_per_sample = 4.0 * sum(int(np.prod(shapes[i])) for g in mine
                                          for i in groups[g])
        devices = self._devices()
        stage_groups = [[layers[i] for i in groups[g]] for g in mine]
        if len(devices) > 1:
            part_plan = plan_stages(costs[mine.start:mine.stop], len(devices),
                                    p.boundaries if p.stages == 1 else None)
            parts = [[layer for g in stage_groups[part_plan.layers(k).start:
                                                  part_plan.layers(k).stop] for layer in g]
                     for k in range(len(devices))]
        else:
            parts = [[layer for g in stage_groups for layer in g]]
        self.plan = plan
        self._make_stage(parts, devices, recipe)
        self.ops: list[Op] = schedule(p.schedule, self.layout.stage, p.stages, p.microbatches)
        self._reset_metrics()
        self._steps = 0

    def _devices(self) -> list[str]:
        placement = self.parallel.placement
        if self.parallel.stages > 1:
            return [placement[self.layout.stage]] if placement else [self.device]
        return placement or [self.device]

    # -- one batch ------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, float]:
        started = time.perf_counter()
        self._zero_grad(lr)
        busy, cpu, peak, sums = self._run_schedule(x, y)
        t0 = time.perf_counter()
        self._apply()
        busy += time.perf_counter() - t0
        sums = self._from_last(sums)
        wall = time.perf_counter() - started
        self._steps += 1
        if self._steps > 1:  # the first step carries tracing and allocation
            self._busy += busy
            self._cpu += cpu
            self._wall += wall
            self._timed += 1
        self._peak = max(self._peak, peak)
        return {"loss": float(sums[0]),
                "accuracy": float(sums[1]) / len(y)}

    def _run_schedule(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, np.ndarray]:
        m, stage = self.parallel.microbatches, self.layout.stage
        n = len(x)
        if n < m:
            raise UserError(f"a batch of {n} samples cannot be cut into {m} micro-batches; "
                            "set data.drop_last true or lower parallel.microbatches")
        edges = [n * i // m for i in range(m + 1)]  # equal sizes when m divides the batch
        self._microbatch_size = edges[1] - edges[0] + (1 if n % m else 0)
        pipe, first, last = self.pipe, self.first, self.last
        waiting: dict[Op, Any] = {}

        def post(op: Op) -> None:
            i = op.microbatch
            if i >= m:
                return
            size = edges[i + 1] - edges[i]
            if op.kind == "F" and not first:
                waiting[op] = pipe.post_recv((size, *self.in_shape), stage - 1, i, FORWARD)
            elif op.kind == "B" and not last:
                waiting[op] = pipe.post_recv((size, *self.out_shape), stage + 1, i, BACKWARD)

        post(Op("F", 0))
        post(Op("B", 0))
        busy, cpu, held, peak, sums = 0.0, 0.0, 0, 0, np.zeros(2)
        for op in self.ops:
            i = op.microbatch
            lo, hi = edges[i], edges[i + 1]
            if op.kind == "F":
                inputs = x[lo:hi] if first else pipe.wait(waiting.pop(op))
                post(Op("F", i + 1))  # the next activation may arrive while this one computes
                labels = y[lo:hi] if last else None
                t0, c0 = time.perf_counter(), time.thread_time()
                out = self._forward(i, inputs, labels, (hi - lo) / n)  # mean over the batch
                busy += time.perf_counter() - t0
                cpu += time.thread_time() - c0
                if last:
                    sums += out * ((hi - lo) / n, 1.0)
                else:
                    pipe.send(out, stage + 1, i, FORWARD)
                    pipe.progress()
                held += 1
                peak = max(peak, held)
            else:
                grad = None if last else pipe.wait(waiting.pop(op))
                post(Op("B", i + 1))
                t0, c0 = time.perf_counter(), time.thread_time()
                grad_in = self._backward(i, grad)
                busy += time.perf_counter() - t0
                cpu += time.thread_time() - c0
                if not first:
                    pipe.send(grad_in, stage - 1, i, BACKWARD)
                    pipe.progress()
                held -= 1
        pipe.finish_sends()
        return busy, cpu, peak, sums

    def _from_last(self, values: np.ndarray) -> np.ndarray:
        """The last stage's numbers, on every stage of its pipeline. A sum (the other stages
        give zeros) rather than a broadcast, so that every stage leaves the step together and
        each stage's step time is the pipeline's whole span."""
        values = np.ascontiguousarray(values if self.last else np.zeros_like(values),
                                      dtype=np.float64)
        if self.layout.stages == 1:
            return values
        from mpi4py import MPI

        out = np.empty_like(values)
        self.pipe.comm.Allreduce(values, out, op=MPI.SUM)
        return out

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        stage, pipe = self.layout.stage, self.pipe
        inputs = x if self.first else pipe.wait(
            pipe.post_recv((len(x), *self.in_shape), stage - 1, 0, FORWARD))
        out = self._infer(inputs)
        sums = np.zeros(2)
        if self.last:
            sums = cross_entropy_sums(out, y)
        else:
            pipe.send(out, stage + 1, 0, FORWARD)
            pipe.finish_sends()
        sums = self._from_last(sums)
        return {"loss_sum": float(sums[0]), "correct": int(sums[1]), "count": len(y)}

    # -- state and collectives ------------------------------------------------------------

    def broadcast_state(self, root_rank: int = 0) -> None:
        """Make each stage's parameters equal to replica 0's (its stage process group).
        Optimizer state is fresh at the start on every rank, so only parameters travel."""
        if self.layout.replicas == 1:
            return
        arrays = [np.ascontiguousarray(a) for a in self.parameters_as_numpy()]
        for array in arrays:
            self.stage_comm.Bcast(array, root=0)
        self._assign(arrays)

    def allreduce(self, values: np.ndarray, op: str = "average",
                  name: str | None = None) -> np.ndarray:
        from mpi4py import MPI  # MPI collectives match by order: `name` is not needed

        values = np.ascontiguousarray(values, dtype=np.float64)
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=MPI.SUM)
        return out / self.comm.Get_size() if op == "average" else out

    def broadcast_object(self, obj: Any, root_rank: int = 0, name: str | None = None) -> Any:
        return self.comm.bcast(obj, root=root_rank)

    def state(self) -> dict[str, Any] | None:
        """Every stage's state, on rank 0 (None elsewhere); every rank must call it. Replica 0
        of each stage sends its own (the replicas of a stage are equal after each step)."""
        mine = self._stage_state() if self.layout.replica == 0 else None
        gathered = self.comm.gather(mine, root=0)
        if gathered is None:
            return None
        return {"pipeline_stages": self.layout.stages,
                "bounds": list(self.plan.bounds), "stages": gathered[:self.layout.stages]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take this rank's stage from a checkpoint of every stage (`state`)."""
        saved = (state.get("pipeline_stages"), state.get("bounds"))
        if "stages" not in state or saved != (self.layout.stages, list(self.plan.bounds)):
            raise UserError(f"this checkpoint's pipeline (stages, layer bounds) is {saved}, this "
                            f"run's is {(self.layout.stages, list(self.plan.bounds))}; resume "
                            "with the same cut (set parallel.boundaries to its bounds)")
        self._load_stage_state(state["stages"][self.layout.stage])

    def _stage_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_stage_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def comm_seconds(self) -> float:
        return self.pipe.wait_seconds

    # -- metrics --------------------------------------------------------------------------

    def _reset_metrics(self) -> None:
        self._busy = self._wall = self._cpu = 0.0
        self._timed = self._peak = self._microbatch_size = 0

    def epoch_metrics(self) -> dict[str, Any]:
        """Per stage (averaged over replicas): busy seconds per step (forward, backward and
        optimizer) and the CPU seconds of its forwards and backwards (below the busy time when
        other processes take the core); its idle share (1 − busy ÷ step time); the peak
        micro-batches of activations held, their MiB, and the process's peak RSS.

        The idle time splits in two. `bubble` is the schedule's: the idle share of the busiest
        stage, which sets the step time, so it is what (p − 1) / (m + p − 1) predicts.
        `imbalance` is the split's: 1 − mean busy ÷ largest busy, the share of the work the
        less loaded stages could still take (0 for a perfectly balanced split)."""
        mb = self._microbatch_size
        row = [self.layout.stage, self._busy, self._wall, self._timed, self._peak,
               self._peak * mb * self.bytes_per_sample,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, self._cpu]
        rows = np.array(self.comm.allgather(row), dtype=np.float64)
        self._reset_metrics()
        stages = self.layout.stages
        busy, idle, held, act, rss, cpu = [], [], [], [], [], []
        for s in range(stages):
            r = rows[rows[:, 0] == s]
            steps = max(r[:, 3].sum(), 1.0)
            busy.append(float(r[:, 1].sum() / steps))
            cpu.append(float(r[:, 7].sum() / steps))
            idle.append(float(1 - r[:, 1].sum() / r[:, 2].sum()) if r[:, 2].sum() else 0.0)
            held.append(int(r[:, 4].max()))
            act.append(float(r[:, 5].max() / 2**20))
            rss.append(float(r[:, 6].max() / 2**20))
        busiest = int(np.argmax(busy))
        return {"pipeline": {
            "schedule": self.parallel.schedule, "stages": stages,
            "microbatches": self.parallel.microbatches, "replicas": self.layout.replicas,
            "bounds": list(self.plan.bounds), "bubble": idle[busiest],
            "ideal_bubble": (stages - 1) / (self.parallel.microbatches + stages - 1),
            "imbalance": float(1 - np.mean(busy) / busy[busiest]) if busy[busiest] else 0.0,
            "stage_busy_s": busy, "stage_busy_cpu_s": cpu, "stage_idle": idle,
            "stage_peak_microbatches": held, "stage_peak_activation_mib": act,
            "stage_max_rss_mib": rss,
        }}


def median_seconds(work: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Median wall seconds of `work(*args)` over `repeats` runs, after one untimed run."""
    work(*args)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work(*args)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def cross_entropy_sums(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Summed softmax cross-entropy and the number of correct predictions, in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].sum()
    return np.array([loss, float((logits.argmax(1) == labels).sum())])
