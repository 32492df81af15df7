"""A pipeline stage's step: its schedule of micro-batches, run framework-free.

`PipelineStep` gives the trainer the same members as `LocalStep` (hvdkit.parallel.step), so the
one loop drives pipelines unchanged: `train_step` runs one batch's schedule and returns the
loss and accuracy, which the other stages receive from the last. The adapter supplies the
mechanics: a micro-batch forward or backward through one of the stage's chunks (a backward
split in two for zb-h1: `backward` for the input's gradient, `backward_weights` later), and
`apply_gradients`, which goes through the gradient exchange of the stage's replicas
(hvdkit.parallel.exchange). The ops and their order come from hvdkit.parallel.schedules.

Ranks: rank = replica × stages + stage (hvdkit.layout). One MPI communicator per pipeline carries
activations and gradients (mpi4py, hvdkit.parallel.p2p).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.parallel.p2p import BACKWARD, FORWARD, Neighbours
from hvdkit.parallel.pipeline import Plan
from hvdkit.parallel.schedules import Op, global_chunk, message_tag, schedule, splits_backward
from hvdkit.parallel.stage_metrics import StageMetrics
from hvdkit.parallel.step import LocalStep
from hvdkit.parallel.tied import TiedGradients


class Chunk(NamedTuple):
    """One model chunk this stage keeps: its input and output feature shapes, and the bytes
    per sample of activations a held micro-batch keeps (every layer output of the chunk)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    bytes_per_sample: float


class PipelineStep(LocalStep):
    """This rank's stage of one pipeline replica."""

    collective_state = True  # each stage's state lives on its own ranks

    def __init__(self, adapter: Any, layout: ParallelLayout, rank: int, plan: Plan,
                 chunks: list[Chunk], shared: dict[int, tuple[int, ...]] | None = None
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
        self.plan, self.chunks = plan, chunks
        self.ops: list[Op] = schedule(layout.schedule, self.stage, layout.stages,
                                      layout.microbatches, layout.virtual_stages)
        self.metrics = StageMetrics(layout, self.stage)
        # Weights shared with other stages: their gradients are summed across them.
        tied = TiedGradients(self.pipe.comm, self.stage, shared or {}, adapter.parameter_keys())
        adapter.configure_stage(splits_backward(layout.schedule), self.first,
                                tied if tied.indices else None)

    # -- one batch ------------------------------------------------------------------------

    def stage_batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The schedule cuts numpy micro-batches: batches stay numpy. Runs in the data
        prefetch thread, which must never call MPI (the stages' messages are the step's)."""
        return x, y

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> Any:
        started = time.perf_counter()
        self.adapter.zero_grad(lr)
        busy, cpu, peak, peak_bytes, sums = self._run_schedule(x, y)
        t0 = time.perf_counter()
        self.adapter.apply_gradients()
        busy += time.perf_counter() - t0
        sums = self._from_last(sums)
        self.metrics.add_step(busy, cpu, time.perf_counter() - started, peak, peak_bytes)
        return np.array([sums[0], sums[1] / len(y)])

    def read_metrics(self, handles: list[Any]) -> np.ndarray:
        return np.array(handles, dtype=np.float64)

    def _where(self, op: Op) -> tuple[int, int, int]:
        """An op's global chunk, and the stages before and after this one (a ring: with
        virtual stages the last stage's chunk k feeds the first stage's chunk k + 1)."""
        stages = self.layout.stages
        return (global_chunk(op, self.stage, stages), (self.stage - 1) % stages,
                (self.stage + 1) % stages)

    def _run_schedule(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int, float,
                                                                    np.ndarray]:
        """Run this stage's ops in order. F receives its input (unless it runs chunk 0) and
        sends its output on (unless it runs the last chunk, which computes the loss); B
        receives the output's gradient and sends the input's back; W (zb-h1) only computes.
        Each direction's next receive is posted ahead, so it lands while this stage computes.
        Returns busy and CPU seconds, the peak (micro-batch, chunk) activations held and their
        bytes, and the last chunk's [loss, correct] sums."""
        m, adapter = self.layout.microbatches, self.adapter
        n = len(x)
        if n < m:
            raise UserError(f"a batch of {n} samples cannot be cut into {m} micro-batches; "
                            "set data.drop_last true or lower parallel.microbatches")
        edges = [n * i // m for i in range(m + 1)]  # equal sizes when m divides the batch
        pipe, top = self.pipe, self.layout.stages * self.layout.virtual_stages - 1
        frees = "W" if adapter.split_backward else "B"

        def receives(op: Op) -> bool:
            c = self._where(op)[0]
            return (op.kind == "F" and c > 0) or (op.kind == "B" and c < top)

        # Receives in schedule order, per direction; each is posted once the previous is read.
        queues = {kind: [op for op in self.ops if op.kind == kind and receives(op)]
                  for kind in "FB"}
        waiting: dict[Op, Any] = {}

        def post(kind: str) -> None:
            if not queues[kind]:
                return
            op = queues[kind].pop(0)
            c, before, after = self._where(op)
            rows = edges[op.microbatch + 1] - edges[op.microbatch]
            chunk = self.chunks[op.chunk]
            if kind == "F":
                waiting[op] = pipe.post_recv((rows, *chunk.in_shape), before,
                                             message_tag(op.microbatch, c, FORWARD, top))
            else:
                waiting[op] = pipe.post_recv((rows, *chunk.out_shape), after,
                                             message_tag(op.microbatch, c + 1, BACKWARD, top))

        post("F")
        post("B")
        busy = cpu = held_bytes = peak_bytes = 0.0
        held = peak = 0
        sums = np.zeros(2)
        for op in self.ops:
            i, (c, before, after) = op.microbatch, self._where(op)
            lo, hi = edges[i], edges[i + 1]
            if op.kind == "F":
                inputs = x[lo:hi] if c == 0 else pipe.wait(waiting.pop(op))
                if c > 0:
                    post("F")  # the next activation may arrive while this one computes
                labels = y[lo:hi] if c == top else None
                t0, c0 = time.perf_counter(), time.thread_time()
                out = adapter.forward(i, inputs, labels, (hi - lo) / n, c > 0, op.chunk)
                busy += time.perf_counter() - t0
                cpu += time.thread_time() - c0
                if c == top:
                    sums += out * ((hi - lo) / n, 1.0)  # the batch's mean loss; its correct
                else:
                    pipe.send(out, after, message_tag(i, c + 1, FORWARD, top))
                    pipe.progress()
                held += 1
                held_bytes += (hi - lo) * self.chunks[op.chunk].bytes_per_sample
                peak, peak_bytes = max(peak, held), max(peak_bytes, held_bytes)
                continue
            grad = None if op.kind == "W" or c == top else pipe.wait(waiting.pop(op))
            if op.kind == "B" and c < top:
                post("B")
            t0, c0 = time.perf_counter(), time.thread_time()
            if op.kind == "W":
                adapter.backward_weights(i, op.chunk)
            else:
                grad_in = adapter.backward(i, grad, op.chunk)
            busy += time.perf_counter() - t0
            cpu += time.thread_time() - c0
            if op.kind == "B" and c > 0:
                pipe.send(grad_in, before, message_tag(i, c, BACKWARD, top))
                pipe.progress()
            if op.kind == frees:
                held -= 1
                held_bytes -= (hi - lo) * self.chunks[op.chunk].bytes_per_sample
        pipe.finish_sends()
        return busy, cpu, peak, peak_bytes, sums

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
        """The whole batch through every chunk in order (with virtual stages each stage
        runs its chunks as the batch comes round the ring)."""
        pipe, top = self.pipe, self.layout.stages * self.layout.virtual_stages - 1
        sums = np.zeros(3)
        for k, chunk in enumerate(self.chunks):
            c, before, after = self._where(Op("F", 0, k))
            inputs = x if c == 0 else pipe.wait(
                pipe.post_recv((len(x), *chunk.in_shape), before,
                               message_tag(0, c, FORWARD, top)))
            out = self.adapter.infer(inputs, k)
            if c == top:
                sums = self.adapter.output_sums(out, y)
            else:
                pipe.send(out, after, message_tag(0, c + 1, FORWARD, top))
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
