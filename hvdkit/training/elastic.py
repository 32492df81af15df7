"""Elastic data parallelism: the trainer's one loop, run under Horovod elastic.

    hvdkit train recipes/digits_mlp.yaml -np 2 --elastic --min-np 1 --max-np 2 \\
        --host-discovery-script launch/discover_hosts.sh

The elastic state holds the model, the optimizer and the position (epoch, global sample in
the epoch, step, samples seen). Every `train.commit_every_steps` steps it is committed: a copy
kept in memory, and a check for added or removed hosts. When a worker is lost, the others
roll back to the last commit, Horovod re-forms the ring, and the loop goes on from the
committed position at the new world size: the position counts global samples, so nothing is
skipped and at most one commit window is repeated. A worker that joins later receives the
state from rank 0 (`state.sync()`).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, fields
from typing import Any

from hvdkit.runtime.world import World
from hvdkit.training.checkpoint import Position

FIELDS = tuple(f.name for f in fields(Position))


def run_elastic(trainer: Any) -> None:
    """Train `trainer` (set up, position known) to the end under `hvd.elastic.run`."""
    adapter = trainer.adapter
    state = adapter.elastic_state(**asdict(trainer.position))
    every = trainer.recipe.train.commit_every_steps

    def commit(position: Position) -> None:
        if position.step % every == 0:
            for name in FIELDS:
                setattr(state, name, getattr(position, name))
            state.commit()

    def on_reset() -> None:
        trainer.elastic_resets += 1

    state.register_reset_callbacks([on_reset])
    trainer.step_hooks.append(commit)

    @adapter.elastic_run
    def train(state: Any) -> None:
        trainer.position = Position(**{name: getattr(state, name) for name in FIELDS})
        hvd = adapter.hvd
        world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())
        changed = trainer.world != world
        trainer.rebind(world)
        if changed and world.is_root:
            pos = trainer.position
            print(f"[hvdkit] elastic: {world.size} worker(s); going on from epoch "
                  f"{pos.epoch + 1}, sample {pos.sample}, step {pos.step} "
                  f"(reset {trainer.elastic_resets})", file=sys.stderr, flush=True)
        trainer.train_from_position()

    train(state)
