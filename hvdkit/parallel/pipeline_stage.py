"""Cut the model and keep this rank's share: a pipeline stage, placed parts, or all of it.

    runner = apply_pipeline_stage(adapter, layout, recipe, model, input_shape, rank, devices)

A model cut into parts (pipeline stages, or one-stage placement over devices) is a sequence of
*layers* (hvdkit.parallel.pipeline.group_layers), cut by parameter count, measured time, or
explicit `parallel.boundaries`. Stages cut the layer groups first (into stages × v chunks with
virtual stages, stage s keeping chunks s, s + stages, ...); placement then cuts this stage's
groups into one part per device. A model that is not cut is kept whole, as built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hvdkit.layout import ParallelLayout
from hvdkit.parallel.pipeline import group_layers, plan_stages
from hvdkit.parallel.step import LocalStep
from hvdkit.parallel.tied import shared_weights


def apply_pipeline_stage(adapter: Any, layout: ParallelLayout, recipe: Any, model: Any,
                         input_shape: tuple[int, ...], rank: int,
                         devices: list[str]) -> LocalStep:
    """Keep this rank's share of `model` on `devices`; the step runner that drives it."""
    if layout.parts == 1:
        adapter.keep([[model]], devices)
        return LocalStep(adapter, layout)
    p = recipe.parallel
    layers = adapter.model_layers(model)
    groups = group_layers([adapter.layer_has_params(layer) for layer in layers])
    rows = max(1, recipe.train.batch_size // p.microbatches)  # a micro-batch, per replica
    params, shapes, seconds = adapter.profile_layers(layers, input_shape, rows,
                                                     p.split == "time")
    if p.split == "time" and layout.pipelined:
        # Every rank must cut the same way: each measured its own (noisy) timings, and two
        # stages cutting differently exchanged tensors of other shapes (MPI_ERR_TRUNCATE, or
        # a crash in Isend). Rank 0's timings decide.
        from mpi4py import MPI

        seconds = MPI.COMM_WORLD.bcast(seconds, root=0)
    costs = [sum((seconds if p.split == "time" else params)[i] for i in g) for g in groups]
    layout.check_cut(len(groups))  # a user's model is first counted here
    # With virtual stages the model is cut into stages x v chunks; stage s keeps s, s + p, ...
    virtual = layout.virtual_stages if layout.pipelined else 1
    plan = plan_stages(costs, layout.stages * virtual, p.boundaries if layout.pipelined else None)
    stage = layout.stage_of(rank)
    chunks = [plan.layers(k * layout.stages + stage) for k in range(virtual)]
    mine = chunks[0]
    stage_groups = [[layers[i] for i in groups[g]] for g in mine]
    if layout.virtual_stages > 1:
        adapter.keep_chunks([[layers[i] for g in chunk for i in groups[g]] for chunk in chunks],
                            devices[0])
    elif len(devices) > 1:
        cut = plan_stages(costs[mine.start:mine.stop], len(devices),
                          None if layout.pipelined else p.boundaries)
        parts = [[layer for g in stage_groups[cut.layers(k).start:cut.layers(k).stop]
                  for layer in g] for k in range(len(devices))]
        adapter.keep(parts, devices)
    else:
        adapter.keep([[layer for g in stage_groups for layer in g]], devices)
    if not layout.pipelined:
        return LocalStep(adapter, layout)
    from hvdkit.parallel.pipeline_step import Chunk, PipelineStep

    out_shapes = [shapes[g[-1]] for g in groups]
    # Activation bytes per sample a held micro-batch keeps: every layer output of the chunk.
    kept = [Chunk(tuple(input_shape) if c.start == 0 else out_shapes[c.start - 1],
                  out_shapes[c.stop - 1],
                  4.0 * sum(int(np.prod(shapes[i])) for g in c for i in groups[g]))
            for c in chunks]
    # Weights that layers of several stages use (a tied embedding and output head); chunk k
    # of the plan belongs to stage k mod stages.
    stage_of_layer = [0] * len(layers)
    for k in range(plan.stages):
        for g in plan.layers(k):
            for i in groups[g]:
                stage_of_layer[i] = k % layout.stages
    shared = shared_weights([adapter.parameter_keys(layer) for layer in layers], stage_of_layer)
    return PipelineStep(adapter, layout, rank, plan, kept, shared)
