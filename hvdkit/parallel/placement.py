"""Device placement within one process: which device holds which part of the model.

`parallel.placement` lists one device per part. With `parallel.stages: 1` the model is cut into
that many parts (the same balanced or explicit cut as pipeline stages) inside one process, and
activations move between the devices in forward and backward. With `stages > 1` it lists one
device per stage: each stage's rank puts its part there.

Devices may be written in either framework's form; each adapter gets its own:

    PyTorch      cpu      cuda:0    cuda:1   ...
    TensorFlow   /CPU:0   /GPU:0    /GPU:1   ...

e.g. on a 2-GPU host, `placement: [cuda:0, cuda:1]` runs on either framework.
"""

from __future__ import annotations

import re
from typing import Any

from hvdkit.errors import UserError

_FORMS = (
    (re.compile(r"^(cpu|/cpu:0|/device:cpu:0)$", re.I), "cpu", None),
    (re.compile(r"^(?:cuda|gpu)(?::(\d+))?$", re.I), "gpu", 1),
    (re.compile(r"^/(?:device:)?gpu:(\d+)$", re.I), "gpu", 1),
)


def parse_device(name: str) -> tuple[str, int]:
    """`("cpu", 0)` or `("gpu", i)` from any accepted spelling; UserError otherwise."""
    for pattern, kind, group in _FORMS:
        match = pattern.match(name.strip())
        if match:
            return kind, int(match.group(group) or 0) if group else 0
    raise UserError(f"parallel.placement: unknown device {name!r}; use cpu or cuda:i "
                    "(PyTorch) / /CPU:0 or /GPU:i (TensorFlow)")


def device_for(name: str, framework: str) -> str:
    """The device string `framework` expects for `name`."""
    kind, index = parse_device(name)
    if framework == "torch":
        return "cpu" if kind == "cpu" else f"cuda:{index}"
    return "/CPU:0" if kind == "cpu" else f"/GPU:{index}"


def apply_placement(layout: Any, rank: int, default: str) -> list[str]:
    """The devices of this rank's parts: the placement's for its stage, else `default` (the
    device train.device chose for this rank)."""
    return layout.devices(layout.stage_of(rank), default)
