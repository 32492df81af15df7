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


def check_placement(devices: list[str], stages: int) -> None:
    """Recipe-time check: every name parses, and with stages there is one device per stage."""
    for name in devices:
        parse_device(name)
    if devices and stages > 1 and len(devices) != stages:
        raise UserError(f"parallel.placement lists {len(devices)} devices but parallel.stages "
                        f"is {stages}; give one device per stage")
