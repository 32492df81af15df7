"""A stand-in for a job being stopped, shared by the workers that test checkpoint and resume."""

from __future__ import annotations

from hvdkit.training.callbacks import Callback


class Stop(Exception):
    """Raised by every rank at the same step."""


class StopAfter(Callback):
    """Raise `Stop` once `steps` optimizer steps have completed."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, step: int, logs: dict) -> None:
        if step + 1 >= self.steps:
            raise Stop
