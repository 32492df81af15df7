"""The one training loop, written once for every framework.

    recipe → adapter.init (ranks, threads) → data shard → adapter.train_step per batch
    → metrics averaged across ranks every `log_every_steps` → callbacks → evaluation

It never imports a framework: the adapter does the framework's work, and every array that
passes between them is numpy, but for batches the adapter staged itself (`stage_batch`, in the
data prefetch thread: its tensors, on its device) and step metrics (on the device until
logged). The data side is hvdkit.data: a source, the sharded loader, the prefetch thread.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.adapters.base import Adapter, get_adapter
from hvdkit.config import Recipe
from hvdkit.data import ShardedLoader, build_source, to_source
from hvdkit.data.checks import check_model_fits
from hvdkit.data.images import normalize
from hvdkit.data.loader import eval_batches
from hvdkit.data.workers import start_workers
from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.models.tasks import task_for
from hvdkit.models.usermodel import model_input_shape
from hvdkit.parallel import parallelize
from hvdkit.runtime.allocator import tune_host_allocator
from hvdkit.runtime.cpu_precision import check_cpu_precision, device_is_cpu
from hvdkit.runtime.heartbeat import report_step
from hvdkit.runtime.mpi import start_mpi_here
from hvdkit.runtime.rank import controller_from_env, size_from_env
from hvdkit.runtime.stop import StepBoundaryStop
from hvdkit.runtime.world import World, job_seconds_so_far, warn_oversubscribed_host
from hvdkit.training.callbacks import Callback, Logs
from hvdkit.training.checkpoint import Checkpointer, Position
from hvdkit.training.inputmeter import InputMeter
from hvdkit.training.lr_schedule import learning_rate
from hvdkit.training.metrics import PendingSteps, flush_metrics
from hvdkit.training.rundir import new_run_dir
from hvdkit.training.summary import fit_summary, make_callbacks
from hvdkit.training.timing import ThroughputWindow

EVAL_BATCH = 512


def _report_step(pos: Position) -> None:
    """The step hook that puts this rank's step into its heartbeat (hvdkit.launch.monitor)."""
    report_step(pos.step)


class Trainer:
    """Trains `recipe` with one framework's adapter; `fit()` returns the run's summary.

    `model` may be the user's own model (an `nn.Module` or a `keras.Model`) or a callable
    `(input_shape, num_classes) -> model`, called after Horovod starts; the recipe's model
    section is then ignored. Rank 0 writes the run's files to `run_dir`: a folder, "auto"
    for runs/<recipe>-<framework>-np<N>-<time>, or None for no files.

    `resume` restores a checkpoint before training: "latest" (the newest good one of
    `run_dir`), a run folder, a checkpoint folder or a file. `elastic` runs the loop under
    Horovod elastic (`hvdkit.training.elastic`), inside `horovodrun --host-discovery-script`.

    `data` replaces the recipe's data set with your own: a `hvdkit.data.Dataset` of arrays, a
    map-style data set (`len()` and `[i] -> (x, y)` numpy; `data.workers` processes decode
    it), or a (train, test) pair of them; see `hvdkit.data.to_source`.

    `tensorboard` writes `run_dir/tensorboard/` event files (hvdkit.training.tensorboard).
    """

    def __init__(
        self,
        recipe: Recipe,
        framework: str = "torch",
        *,
        model: Any = None,
        data: Any = None,
        callbacks: Sequence[Callback] = (),
        run_dir: str | Path | None = None,
        progress: bool = True,
        launch_info: dict[str, Any] | None = None,
        adapter: Adapter | None = None,
        resume: str | Path | None = None,
        elastic: bool = False,
        tensorboard: bool = True,
    ) -> None:
        self.recipe = recipe
        self.framework = framework
        self.adapter = adapter
        """The framework adapter (made in `fit` unless given): this rank's model and state."""
        self.model = model
        self.user_data = data
        self.user_callbacks = list(callbacks)
        self.run_dir = None if run_dir in (None, "auto") else Path(run_dir)
        self._auto_run_dir = run_dir == "auto"
        self.progress = progress
        self.launch_info = launch_info or {}
        self.world: World | None = None
        self.resume = resume
        self.elastic = elastic
        self.tensorboard = tensorboard
        # The run's state, set by `fit`: the layout, this rank's step runner, and where
        # training stands (position, world, this rank's data shard, the step it ends at).
        self.layout: ParallelLayout | None = None
        self.runner: Any = None
        self.position = Position()
        self.loader: ShardedLoader | None = None
        self.total_steps = 0
        self.checkpointer: Checkpointer | None = None
        self.host_allocator: dict[str, Any] = {}

    # -- set-up ---------------------------------------------------------------------------

    def _setup(self) -> None:
        recipe = self.recipe
        self.host_allocator = tune_host_allocator(recipe.train.host_allocator)  # before tensors
        # The layout's rules, checked again in this worker before any framework loads.
        self.layout = layout = self._layout(size_from_env())
        adapter = self.adapter = self.adapter or get_adapter(self.framework)
        sets = ([layout.stage_ranks(s) for s in range(layout.stages)]
                if layout.pipelined and layout.replicas > 1 else [])
        if layout.uses_mpi4py:
            start_mpi_here()  # on this thread, before Horovod would on its own
        rank, size, local_rank, local_size = adapter.init(
            sets, recipe.train.threads, recipe.train.device, exclusive_gpu=layout.replicas > 1)
        check_cpu_precision(recipe.train.precision, recipe.train.precision_force,
                            device_is_cpu(adapter.device))
        warn_oversubscribed_host(local_rank, local_size)
        if size != layout.world_size:  # e.g. an elastic job, or a launcher without the env
            self.layout = layout = self._layout(size)
        if self._auto_run_dir:  # rank 0 makes a new folder; every rank learns its name
            made = str(new_run_dir(recipe.name, self.framework, size)) if rank == 0 else None
            self.run_dir = Path(adapter.broadcast_object(made, name="hvdkit.run_dir"))
        if self.user_data is not None:
            self.data = to_source(self.user_data, recipe.data)
        else:
            self.data = build_source(recipe.data, recipe.train.seed, recipe.folder)
        if self.model is None:
            check_model_fits(recipe.model.name, self.data)
        world = World(rank, size, local_rank, local_size, data_rank=layout.replica_of(rank),
                      data_size=layout.replicas)
        self.stop = StepBoundaryStop(world.is_root)  # SIGINT/SIGTERM: agreed about once a second
        self.rebind(world)
        if self.loader.steps_per_epoch == 0:
            raise UserError(
                f"train.batch_size x parallel.accumulation x ranks = {self.loader.global_batch} "
                f"is larger than the {self.loader.n} training samples"
            )
        start_workers(self.data, recipe.data.workers)  # forked before the prefetch thread
        self.input_meter = InputMeter(self.data.train)
        # The task follows the data; the model sees images channels first if asked to.
        adapter.configure_data(task_for(self.data), self.data.input_dtype,
                               self.data.normalization)
        shape = model_input_shape(self.data.input_shape, recipe.model.channels_first,
                                  self.framework)
        # A user's model is run once on a few training samples (build_model's probe).
        sample = self.data.train.take(np.arange(min(4, len(self.data.train))))[0]
        if self.data.normalization is not None:
            sample = normalize(sample, self.data.normalization)
        model = adapter.build_model(recipe, shape, self.data.num_classes, self.model, sample)
        self.runner = parallelize(adapter, layout, recipe, model, shape, rank)
        self.runner.broadcast_state()
        checkpoints = self.run_dir / "checkpoints" if self.run_dir is not None else None
        self.checkpointer = Checkpointer(self.runner, recipe, checkpoints, world.is_root,
                                         self.framework)
        self.step_hooks: list[Callable[[Position], None]] = [self.checkpointer.after_step,
                                                             _report_step]
        if self.resume is not None:
            self.position, path = self.checkpointer.restore(self._resume_source())
            if world.is_root:
                print(f"[hvdkit] resumed from {path}: epoch {self.position.epoch + 1}, "
                      f"step {self.position.step}", file=sys.stderr, flush=True)
            self.total_steps = self.plan_steps()
        self.history: list[Logs] = []
        self.samples_trained = 0
        self.elastic_resets = 0
        self.callbacks = make_callbacks(self)

    def _layout(self, world_size: int) -> ParallelLayout:
        return ParallelLayout.from_recipe(self.recipe, world_size, controller_from_env(),
                                          self.elastic)

    def rebind(self, world: World) -> None:
        """Take `world` (at the start, or after an elastic job changed size): this rank's
        shard of the data at that size, and the steps left from the current position."""
        self.world = world
        old = self.loader
        per_step = self.recipe.train.batch_size * self.recipe.parallel.accumulation
        self.loader = ShardedLoader(
            self.data.train, batch_size=per_step,
            rank=world.data_rank, size=world.data_size, seed=self.recipe.train.seed,
            drop_last=self.recipe.data.drop_last, prefetch=self.recipe.data.prefetch,
        ) if old is None or (old.rank, old.size) != (world.data_rank, world.data_size) else old
        if self.checkpointer is not None:
            self.checkpointer.is_root = world.is_root
        self.stop.restart()  # every rank, a new one too, checks at the same steps from here
        self.total_steps = self.plan_steps()

    def _resume_source(self) -> Path:
        if self.resume != "latest":
            return Path(str(self.resume))
        if self.run_dir is None:
            raise UserError("--resume without a path needs --run-dir: the run to resume")
        return self.run_dir

    def emit(self, hook: str, *args: Any) -> None:
        """Call `hook` (`on_step_end`, ...) with `args` on every callback, in order."""
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # -- the loop -------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        started = time.perf_counter() - job_seconds_so_far()  # wall_time is the job's
        self._setup()
        recipe, world = self.recipe, self.world
        assert world is not None
        self.emit("on_train_begin", {"total_steps": self.total_steps,
                                     "epochs": recipe.train.epochs, "world_size": world.size})
        # train.compile: the first step compiles; it never enters the timed window.
        warmup = max(recipe.train.timing_warmup_steps, int(recipe.train.compile))
        self.first_step_seconds: float | None = None
        self.window = ThroughputWindow(self.adapter.allreduce, warmup,
                                       self.total_steps, self.runner.comm_seconds)
        self.stop.install()
        try:
            if self.elastic:
                from hvdkit.training.elastic import run_elastic

                run_elastic(self)
            else:
                self.train_from_position()
        finally:
            self.data.close()  # worker processes, if any
            self.stop.restore()
        timed = self.window.close()  # before the final checkpoint, which is not training
        self.checkpointer.save(self.position)
        summary = fit_summary(self, time.perf_counter() - started, timed)
        self.emit("on_train_end", summary)
        if world.is_root and self.run_dir is not None:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def train_from_position(self) -> None:
        """The loop, from `self.position` to the end: plain, resumed and elastic runs share it.

        With a loader whose ranks get different numbers of batches (`loader.even` False), a
        rank that runs out joins (`hvd.join`): it answers the others' remaining allreduces
        with zeros until every rank is done; then all flush their last metrics together.
        """
        recipe, world, loader, pos = self.recipe, self.world, self.loader, self.position
        assert world is not None
        while (pos.epoch < recipe.train.epochs and pos.step < self.total_steps
               and not self.stop.signum):
            epoch = pos.epoch
            self.emit("on_epoch_begin", epoch, {"start_sample": pos.sample})
            epoch_started = time.perf_counter()
            self.input_meter.mark()
            pending = PendingSteps()  # the steps' metrics, still on the device
            losses: list[float] = []
            samples, stopped = 0, False
            # The batches are staged (as the framework's tensors, on the device) in the
            # prefetch thread while the previous steps run.
            # (closed however the loop ends: a stop, an exception, an elastic reset)
            with closing(loader.batches(epoch, start_sample=pos.sample,
                                        stage=self.runner.stage_batch)) as staged:
                for x, y in self.input_meter.timed(staged):
                    lr = learning_rate(recipe.optimizer, pos.step, loader.steps_per_epoch,
                                       self.total_steps, world.data_size)
                    self.window.before_step(pos.step)
                    t0 = time.perf_counter()
                    handle = self.runner.train_step(x, y, lr)
                    seconds = time.perf_counter() - t0
                    pending.add(handle, seconds, lr)
                    if self.first_step_seconds is None:
                        self.first_step_seconds = seconds
                    # A pipeline's stages all see the replica's batch: count it once per replica.
                    self.window.after_step(len(x) * world.data_size / world.size, seconds)
                    taken = loader.step_samples(pos.sample)
                    pos.advance(taken)
                    samples += taken
                    self.samples_trained += taken
                    check_due = self.stop.after_step()
                    if len(pending) >= recipe.train.log_every_steps:  # it carries the check
                        losses += flush_metrics(self, pending, pos.step, epoch)
                    elif check_due:
                        self._check_stop()
                    for hook in self.step_hooks:  # checkpoints; elastic commits
                        hook(pos)
                    if pos.step >= self.total_steps or self.stop.signum:
                        stopped = True
                        break
            if not loader.even:
                self.adapter.join()  # before the last flush: the others may still be stepping
            # Every rank flushes at the end of every epoch (even with no rows left), so the
            # flushes match across ranks with uneven data, and a stop request reaches them all.
            losses += flush_metrics(self, pending, pos.step, epoch)
            train_time = time.perf_counter() - epoch_started
            logs: Logs = {
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "epoch_time": train_time,
                "samples_per_sec": samples / train_time,
                "step": pos.step,
            }
            complete = not stopped or loader.steps_left(pos.sample) == 0
            logs["complete"] = complete  # False: cut short (a stop, max_steps)
            final = pos.step >= self.total_steps or epoch == recipe.train.epochs - 1
            due = final or (epoch + 1) % recipe.train.eval_every_epochs == 0
            if due and not self.stop.signum:  # stopped: checkpoint now, the resumed run evaluates
                paused_at = self.window.pause()
                logs.update(self.evaluate())
                self.window.resume(paused_at)
            logs.update(self.runner.epoch_metrics())  # pipelines: per-stage busy, bubble, memory
            if complete:
                pos.next_epoch()
            self.history.append(logs)
            self.emit("on_epoch_end", epoch, logs)

    def plan_steps(self) -> int:
        """The step at which training ends, counted from the position at the current np."""
        loader, pos, epochs = self.loader, self.position, self.recipe.train.epochs
        left = loader.steps_left(pos.sample) + loader.steps_per_epoch * (epochs - pos.epoch - 1)
        total = pos.step + max(left, 0)
        return min(total, self.recipe.train.max_steps) if self.recipe.train.max_steps else total

    def _check_stop(self) -> None:
        """The stop check between two flushes: a tiny allreduce, named (ranks that joined
        answer it with zeros), of the whole job (a pipeline's stages all stop together)."""
        totals = self.adapter.allreduce(self.stop.payload(), op="sum", name="hvdkit.stop")
        self.stop.agree(totals)

    def evaluate(self) -> dict[str, float]:
        """The task's test metrics over the whole test set, each replica taking a share (a
        pipeline's stages count their replica's sums once: they all hold the last stage's)."""
        assert self.world is not None
        self.runner.average_statistics()  # one model evaluated, as checkpoints hold it
        sums = np.zeros(len(self.adapter.task.eval_sums))
        for x, y in eval_batches(self.data.test, self.world.data_rank, self.world.data_size,
                                 EVAL_BATCH, self.recipe.data.prefetch,
                                 self.runner.stage_batch):
            sums += self.runner.eval_step(x, y)
        sums *= self.world.data_size / self.world.size
        total = self.adapter.allreduce(sums, op="sum", name="hvdkit.eval")
        return {k: float(v) for k, v in self.adapter.task.test_metrics(list(total)).items()}
