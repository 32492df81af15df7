"""The parallel layout: how a job's ranks split the work, checked once, in one place.

    layout = ParallelLayout.from_recipe(recipe, world_size=4, controller="mpi")
    layout.stages, layout.replicas            # 2 pipeline stages x 2 data-parallel replicas
    layout.stage_of(3), layout.replica_of(3)  # rank = replica x stages + stage -> (1, 1)

Every rule that ties the parallel fields to each other, to the model and to the launch lives
here (like torchtitan's `parallel_dims`): the recipe loader calls it without a world (the rules
a recipe alone breaks), the CLI before any worker starts, and each worker again before its
framework loads. Each error is one line naming the field to change. Framework-free.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hvdkit.errors import UserError
from hvdkit.models.catalogue import layer_count
from hvdkit.runtime.devices import parse_device


@dataclass(frozen=True)
class ParallelLayout:
    """A checked layout. `replicas` is the data-parallel degree: the ranks that average each
    gradient (all ranks without stages; a stage's ranks in a hybrid pipeline)."""

    world_size: int
    stages: int
    replicas: int
    placement: tuple[str, ...]
    microbatches: int
    accumulation: int
    schedule: str
    virtual_stages: int
    sync: str
    compression: str
    reduction: str
    powersgd_rank: int
    powersgd_warmup_steps: int
    controller: str
    elastic: bool
    boundaries: tuple[int, ...] = ()

    @property
    def pipelined(self) -> bool:
        return self.stages > 1

    @property
    def uses_mpi4py(self) -> bool:
        """Whether ranks call mpi4py beside Horovod: a pipeline's messages, the parameter
        server's gradients."""
        return self.stages > 1 or self.sync == "ps"

    @property
    def parts(self) -> int:
        """Pieces the model is cut into: stages (× their virtual stages), or the devices of a
        one-stage placement."""
        if self.stages > 1:
            return self.stages * self.virtual_stages
        return max(1, len(self.placement))

    def stage_of(self, rank: int) -> int:
        return rank % self.stages

    def replica_of(self, rank: int) -> int:
        return rank // self.stages

    def stage_ranks(self, stage: int) -> list[int]:
        """The ranks that run `stage`, one per replica: they exchange that stage's gradients."""
        return [r * self.stages + stage for r in range(self.replicas)]

    def devices(self, stage: int, default: str) -> list[str]:
        """The devices of `stage`'s parts: the placement's, else `default` (train.device's)."""
        if self.stages > 1:
            return [self.placement[stage]] if self.placement else [default]
        return list(self.placement) or [default]

    def check_cut(self, layers: int, model: str = "the model", source: str = "") -> None:
        """The model's cut into `parts` fits its `layers` (layers with parameters): checked
        from the catalogue before launch, and against the built model in each rank (a user's
        model has no catalogue entry)."""
        where = f"{source}: " if source else ""
        if self.parts > layers:
            field = ("parallel.placement" if self.stages == 1 else "parallel.stages" if
                     self.virtual_stages == 1 else "parallel.stages x parallel.virtual_stages")
            raise UserError(f"{where}{field} cuts {model} into {self.parts} parts but it has "
                            f"only {layers} layers with parameters; use at most {layers}")
        if self.boundaries:
            bounds = [0, *self.boundaries, layers]
            if any(a >= b for a, b in itertools.pairwise(bounds)):
                raise UserError(f"{where}parallel.boundaries {list(self.boundaries)} must rise "
                                f"strictly within 1..{layers - 1} ({model} has {layers} "
                                "layers with parameters)")

    @classmethod
    def from_recipe(cls, recipe: Any, world_size: int | None = None, controller: str = "mpi",
                    elastic: bool = False, source: str = "the recipe") -> ParallelLayout:
        """Check every layout rule; `world_size` None checks what the recipe alone decides
        (the layout then assumes one replica)."""
        p, train = recipe.parallel, recipe.train
        where = f"{source}: " if source else ""

        def fail(message: str) -> None:
            raise UserError(where + message)

        for key, value in (("parallel.stages", p.stages), ("parallel.microbatches",
                           p.microbatches), ("parallel.accumulation", p.accumulation),
                           ("parallel.virtual_stages", p.virtual_stages)):
            if value < 1:
                fail(f"{key} must be at least 1, got {value}")
        if p.virtual_stages > 1 and (p.schedule != "interleaved" or p.stages == 1):
            fail(f"parallel.virtual_stages {p.virtual_stages} needs parallel.schedule "
                 "interleaved and parallel.stages > 1")
        if p.schedule == "interleaved" and p.stages > 1 and p.microbatches % p.stages:
            fail(f"parallel.schedule interleaved needs parallel.microbatches "
                 f"({p.microbatches}) to be a multiple of parallel.stages ({p.stages})")
        for name in p.placement:
            parse_device(name)
        if p.placement and p.stages > 1 and len(p.placement) != p.stages:
            fail(f"parallel.placement lists {len(p.placement)} devices but parallel.stages is "
                 f"{p.stages}; give one device per stage")
        parts = p.stages * p.virtual_stages if p.stages > 1 else max(1, len(p.placement))
        if p.boundaries:
            if parts == 1:
                fail("parallel.boundaries needs parallel.stages > 1 or a placement")
            if len(p.boundaries) != parts - 1:
                fail(f"parallel.boundaries needs {parts - 1} entries (the first layer of each "
                     f"part after the first), got {len(p.boundaries)}")
        if p.stages == 1 and p.microbatches > 1:
            fail("parallel.microbatches needs parallel.stages > 1; for one stage use "
                 "parallel.accumulation")
        if p.sync != "allreduce" and p.reduction == "adasum":
            fail("parallel.reduction adasum needs parallel.sync allreduce")
        if p.sync == "none" and p.compression != "none":
            fail(f"parallel.sync none exchanges nothing to compress; set parallel.compression "
                 f"none, not {p.compression}")
        if p.compression == "powersgd":
            if p.sync != "allreduce":
                fail(f"parallel.compression powersgd exchanges low-rank factors by allreduce; "
                     f"set parallel.sync allreduce, not {p.sync}")
            if p.reduction == "adasum":
                fail("parallel.compression powersgd needs parallel.reduction average or sum")
        if p.powersgd_rank < 1:
            fail(f"parallel.powersgd_rank must be at least 1, got {p.powersgd_rank}")
        if p.powersgd_warmup_steps < 0:
            fail(f"parallel.powersgd_warmup_steps must be 0 or more, got "
                 f"{p.powersgd_warmup_steps}")
        if elastic and (p.sync == "zero1" or p.compression == "powersgd"):
            field = "sync zero1" if p.sync == "zero1" else "compression powersgd"
            fail(f"parallel.{field} keeps per-rank state for a fixed number of ranks and "
                 "cannot run elastic; drop --elastic")
        if p.stages > 1:
            if p.accumulation != 1:
                fail("a pipeline accumulates over parallel.microbatches; set "
                     "parallel.accumulation 1")
            if p.reduction == "adasum":
                fail("parallel.reduction adasum is not supported in a pipeline; use average "
                     "or sum")
            if train.batch_size % p.microbatches:
                fail(f"train.batch_size {train.batch_size} must divide by "
                     f"parallel.microbatches {p.microbatches}")
        if p.stages > 1 and controller != "mpi":
            fail(f"parallel.stages {p.stages} sends activations with mpi4py, which needs an "
                 f"MPI launch; use --controller mpi, not {controller}")
        if p.stages > 1 and elastic:
            fail("parallel.stages > 1 cannot run elastic: a pipeline needs every stage; "
                 "drop --elastic or set parallel.stages 1")
        if p.sync == "ps" and (controller != "mpi" or elastic):
            fail("parallel.sync ps sends gradients with mpi4py, which needs an MPI launch "
                 "(--controller mpi, not elastic); use parallel.sync allreduce")
        _check_step_options(recipe, fail)
        size = world_size if world_size is not None else p.stages
        if size < 1:
            fail(f"the job needs at least 1 rank, got {size}")
        if size % p.stages:
            fail(f"world size {size} is not parallel.stages ({p.stages}) x a data-parallel "
                 f"degree; launch a multiple of {p.stages} ranks (-np)")
        layout = cls(world_size=size, stages=p.stages, replicas=size // p.stages,
                     placement=tuple(p.placement), microbatches=p.microbatches,
                     accumulation=p.accumulation, schedule=p.schedule,
                     virtual_stages=p.virtual_stages, sync=p.sync, compression=p.compression,
                     reduction=p.reduction, powersgd_rank=p.powersgd_rank,
                     powersgd_warmup_steps=p.powersgd_warmup_steps, controller=controller,
                     elastic=elastic, boundaries=tuple(p.boundaries))
        layers = layer_count(recipe.model)  # None for a user's model: each rank checks it
        if layers is not None:
            layout.check_cut(layers, f"model {recipe.model.name}", source)
        elif any(a >= b for a, b in itertools.pairwise([0, *p.boundaries])):
            fail(f"parallel.boundaries {p.boundaries} must rise strictly from 1")
        return layout


def _check_step_options(recipe: Any, fail: Any) -> None:
    """Precision, clipping and compilation against the exchange and schedule: fp16's skipped
    steps and clip_norm's global norm need the combined gradients before the update, which
    the parameter server (on rank 0) and PowerSGD (inside its own step) never hand back."""
    p, train = recipe.parallel, recipe.train
    wanted = [name for name, on in (("train.precision fp16", train.precision == "fp16"),
                                    ("optimizer.clip_norm", recipe.optimizer.clip_norm > 0))
              if on]
    if wanted and (p.sync == "ps" or p.compression == "powersgd"):
        what = "parallel.sync ps" if p.sync == "ps" else "parallel.compression powersgd"
        fail(f"{wanted[0]} needs the gradients after the exchange, which {what} does not give "
             "back; use parallel.sync allreduce or zero1")
    if train.compile and p.stages > 1 and p.schedule == "zb-h1":
        fail("train.compile cannot split a compiled chunk's backward per layer (zb-h1); "
             "use parallel.schedule 1f1b or train.compile false")
