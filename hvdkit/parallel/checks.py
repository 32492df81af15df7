"""Recipe-time checks of the pipeline and placement fields (called from hvdkit.recipe._check).

Each names the field to fix. What needs the world size or the launch (stages × d = ranks, an
MPI launch) is checked by `hvdkit.parallel.pipeline.check_launch` before workers start.
"""

from __future__ import annotations

from typing import Any

from hvdkit.errors import UserError
from hvdkit.models import layer_count
from hvdkit.parallel.placement import check_placement


def check_pipeline_recipe(recipe: Any, source: str) -> None:
    p = recipe.parallel
    for key, value in (("parallel.stages", p.stages), ("parallel.microbatches", p.microbatches)):
        if value < 1:
            raise UserError(f"{source}: {key} must be at least 1, got {value}")
    check_placement(p.placement, p.stages)
    parts = p.stages if p.stages > 1 else len(p.placement)
    if parts <= 1:
        if p.microbatches > 1:
            raise UserError(f"{source}: parallel.microbatches needs parallel.stages > 1 (or a "
                            "placement); for one stage use parallel.accumulation")
        if p.boundaries:
            raise UserError(f"{source}: parallel.boundaries needs parallel.stages > 1")
        return
    if p.accumulation != 1 or p.sync != "allreduce" or p.reduction == "adasum":
        raise UserError(f"{source}: a pipeline accumulates over parallel.microbatches; set "
                        "parallel.accumulation 1, parallel.sync allreduce, and reduction "
                        "average or sum")
    if recipe.train.batch_size % p.microbatches:
        raise UserError(f"{source}: train.batch_size {recipe.train.batch_size} must divide by "
                        f"parallel.microbatches {p.microbatches}")
    if p.boundaries and len(p.boundaries) != parts - 1:
        raise UserError(f"{source}: parallel.boundaries needs {parts - 1} entries (the first "
                        f"layer of each part after the first), got {len(p.boundaries)}")
    layers = layer_count(recipe.model)
    if layers is not None and parts > layers:
        raise UserError(f"{source}: parallel.stages is {parts} but model {recipe.model.name} "
                        f"has only {layers} layers with parameters; use at most {layers}")
    if layers is not None and p.boundaries and not (
            all(a < b for a, b in zip([0, *p.boundaries], [*p.boundaries, layers],
                                      strict=True))):
        raise UserError(f"{source}: parallel.boundaries {p.boundaries} must rise strictly "
                        f"within 1..{layers - 1}")
