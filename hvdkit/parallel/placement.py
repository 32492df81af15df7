"""Device placement within one process: which device holds which part of the model.

`parallel.placement` lists one device per part. With `parallel.stages: 1` the model is cut into
that many parts (the same balanced or explicit cut as pipeline stages) inside one process, and
activations move between the devices in forward and backward. With `stages > 1` it lists one
device per stage: each stage's rank puts its part there.

Devices may be written in either framework's form (hvdkit.runtime.devices); each adapter gets
its own:

    PyTorch      cpu      cuda:0    cuda:1   ...
    TensorFlow   /CPU:0   /GPU:0    /GPU:1   ...

e.g. on a 2-GPU host, `placement: [cuda:0, cuda:1]` runs on either framework.
"""

from __future__ import annotations

from typing import Any


def apply_placement(layout: Any, rank: int, default: str) -> list[str]:
    """The devices of this rank's parts: the placement's for its stage, else `default` (the
    device train.device chose for this rank)."""
    return layout.devices(layout.stage_of(rank), default)
