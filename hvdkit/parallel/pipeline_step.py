"""A pipeline stage's step: its schedule of micro-batches, run framework-free.

`PipelineStep` gives the trainer the same members as `LocalStep` (hvdkit.parallel.step), so the
one loop drives pipelines unchanged: `train_step` runs one batch's schedule and returns the
loss and accuracy, which the other stages receive from the last. The adapter supplies the
mechanics: a micro-batch forward or backward, and `apply_gradients`, which goes through the
gradient exchange of the stage's replicas (hvdkit.parallel.exchange).

Ranks: rank = replica × stages + stage (hvdkit.layout). One MPI communicator per pipeline carries
activations and gradients (mpi4py, hvdkit.parallel.p2p).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.parallel.p2p import BACKWARD, FORWARD, Neighbours
from hvdkit.parallel.pipeline import Op, Plan, schedule
from hvdkit.parallel.stage_metrics import StageMetrics
from hvdkit.parallel.step import LocalStep
from hvdkit.parallel.tied import TiedGradients


class PipelineStep(LocalStep):
    """This rank's stage of one pipeline replica."""

    collective_state = True  # each stage's state lives on its own ranks

    def __init__(self, adapter: Any, layout: ParallelLayout, rank: int, plan: Plan,
                 in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 bytes_per_sample: float, shared: dict[int, tuple[int, ...]] | None = None
                 ) -> None:
        super().__init__(adapter, layout)
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        if self.comm.Get_size() != layout.world_size:
            raise UserError("a pipeline needs an MPI launch with Horovod's MPI controller: MPI "
                            f"sees {self.comm.Get_size()} ranks, the job {layout.world_size}")
        self.stage, self.replica = layout.stage_of(rank), layout.replica_of(rank)
        self.first, self.last = self.stage == 0, self.stage == layout.stages - 1
        self.pipe = Neighbours(self.comm.Split(self.replica, self.stage))
        self.stage_comm = self.comm.Split(self.stage, self.replica)
        self.plan, self.in_shape, self.out_shape = plan, in_shape, out_shape
        self.ops: list[Op] = schedule(layout.schedule, self.stage, layout.stages,
                                      layout.microbatches)
        self.metrics = StageMetrics(layout, self.stage, bytes_per_sample)
        if not self.first:  # only the first stage reads the data's layout
            adapter.channels_first = False
        # Weights shared with other stages: their gradients are summed across them.
        tied = TiedGradients(self.pipe.comm, self.stage, shared or {}, adapter.parameter_keys())
        adapter.tied = tied if tied.indices else None

    # -- one batch ------------------------------------------------------------------------

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The schedule cuts numpy micro-batches: batches stay numpy."""
        return x, y

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> Any:
        started = time.perf_counter()
        self.adapter.zero_grad(lr)
        busy, cpu, peak, sums = self._run_schedule(x, y)
        t0 = time.perf_counter()
        self.adapter.apply_gradients()
        busy += time.perf_counter() - t0
        sums = self._from_last(sums)
        self.metrics.add_step(busy, cpu, time.perf_counter() - started, peak)
        return np.array([sums[0], sums[1] / len(y)])

    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        return np.array(handles, dtype=np.float64)

    def _run_schedule(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int,
                                                                    np.ndarray]:
        m, stage, adapter = self.layout.microbatches, self.stage, self.adapter
        n = len(x)
        if n < m:
            raise UserError(f"a batch of {n} samples cannot be cut into {m} micro-batches; "
                            "set data.drop_last true or lower parallel.microbatches")
        edges = [n * i // m for i in range(m + 1)]  # equal sizes when m divides the batch
        self.metrics.microbatch_size = edges[1] - edges[0] + (1 if n % m else 0)
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
                out = adapter.forward(i, inputs, labels, (hi - lo) / n, not first)
                busy += time.perf_counter() - t0
                cpu += time.thread_time() - c0
                if last:
                    sums += out * ((hi - lo) / n, 1.0)  # the batch's mean loss; its correct
                else:
                    pipe.send(out, stage + 1, i, FORWARD)
                    pipe.progress()
                held += 1
                peak = max(peak, held)
            else:
                grad = None if last else pipe.wait(waiting.pop(op))
                post(Op("B", i + 1))
                t0, c0 = time.perf_counter(), time.thread_time()
                grad_in = adapter.backward(i, grad)
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
        from mpi4py import MPI

        values = np.ascontiguousarray(values if self.last else np.zeros_like(values),
                                      dtype=np.float64)
        out = np.empty_like(values)
        self.pipe.comm.Allreduce(values, out, op=MPI.SUM)
        return out

    def eval_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        pipe, stage = self.pipe, self.stage
        inputs = x if self.first else pipe.wait(
            pipe.post_recv((len(x), *self.in_shape), stage - 1, 0, FORWARD))
        out = self.adapter.infer(inputs)
        sums = np.zeros(3)
        if self.last:
            sums = self.adapter.output_sums(out, y)
        else:
            pipe.send(out, stage + 1, 0, FORWARD)
            pipe.finish_sends()
        return self._from_last(sums)

    # -- state ----------------------------------------------------------------------------

    def broadcast_state(self) -> None:
        """Make each stage's parameters equal to replica 0's (its stage's communicator).
        Optimizer state is fresh at the start on every rank, so only parameters travel."""
        if self.layout.replicas == 1:
            return
        arrays = [np.ascontiguousarray(a) for a in self.adapter.parameters_as_numpy()]
        for array in arrays:
            self.stage_comm.Bcast(array, root=0)
        self.adapter.assign_parameters(arrays)

    def state(self) -> dict[str, Any] | None:
        """Every stage's state, on rank 0 (None elsewhere); every rank must call it. Replica 0
        of each stage sends its own (the replicas of a stage are equal after each step)."""
        # Under ZeRO-1 or PowerSGD every replica takes part in gathering its stage's state.
        mine = self.adapter.state() if self.replica == 0 or \
            self.adapter.exchange.collective_state else None
        mine = mine if self.replica == 0 else None
        gathered = self.comm.gather(mine, root=0)
        if gathered is None:
            return None
        return {"pipeline_stages": self.layout.stages, "bounds": list(self.plan.bounds),
                "stages": gathered[:self.layout.stages]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take this rank's stage from a checkpoint of every stage (`state`)."""
        saved = (state.get("pipeline_stages"), state.get("bounds"))
        if "stages" not in state or saved != (self.layout.stages, list(self.plan.bounds)):
            raise UserError(f"this checkpoint's pipeline (stages, layer bounds) is {saved}, this "
                            f"run's is {(self.layout.stages, list(self.plan.bounds))}; resume "
                            "with the same cut (set parallel.boundaries to its bounds)")
        self.adapter.load_state(state["stages"][self.stage])

    def comm_seconds(self) -> float:
        """Seconds waiting for the neighbours' activations and gradients, and the exchange."""
        exchange = self.adapter.exchange.comm_seconds()
        return self.pipe.wait_seconds + (exchange if np.isfinite(exchange) else 0.0)

    def epoch_metrics(self) -> dict[str, Any]:
        return self.metrics.epoch_metrics(self.comm.allgather, list(self.plan.bounds))

    def report(self) -> dict[str, Any]:
        return {**super().report(), "p2p_bytes_sent": self.pipe.bytes_sent}
