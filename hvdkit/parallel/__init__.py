"""Parallel strategies, one module each, applied in order in one place.

    runner = parallelize(adapter, layout, recipe, model, input_shape, rank)

    apply_placement         which devices hold this rank's parts         placement.py
    apply_pipeline_stage    cut the model, keep this rank's share        pipeline_stage.py
    make_optimizer          over the kept parameters                     (the adapter)
    plan_exchange           how replicas combine gradients: none | ring  exchange.py (+ the
                            | ps | zero1 | powersgd, built per framework adapters' exchange.py)
    StepGuard.plan          fp16 loss scale, global-norm clip            loss_scale.py

Each exchange works for the data-parallel replicas whether or not the model is also staged or
placed; a combination that cannot work is refused by hvdkit.layout before any worker starts.
Nothing here imports a framework; mpi4py and Horovod are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hvdkit.layout import ParallelLayout


def parallelize(adapter: Any, layout: ParallelLayout, recipe: Any, model: Any,
                input_shape: tuple[int, ...], rank: int) -> Any:
    """Apply the strategies to `model` for this rank; the step runner the trainer drives."""
    from hvdkit.parallel.exchange import plan_exchange
    from hvdkit.parallel.loss_scale import StepGuard
    from hvdkit.parallel.pipeline_stage import apply_pipeline_stage
    from hvdkit.parallel.placement import apply_placement

    devices = apply_placement(layout, rank, adapter.device)
    runner = apply_pipeline_stage(adapter, layout, recipe, model, input_shape, rank, devices)
    adapter.make_optimizer(recipe.optimizer)
    plan = plan_exchange(layout, rank)
    exchange = adapter.use_exchange(plan)
    exchange.use_guard(StepGuard.plan(
        recipe, layout.replicas, sharded=plan.kind == "zero1",
        tied_holders=adapter.tied.holders() if adapter.tied is not None else None))
    return runner
