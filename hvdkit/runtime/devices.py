"""Device names in either framework's spelling, parsed once and given back in each one's.

    PyTorch      cpu      cuda:0    cuda:1   ...
    TensorFlow   /CPU:0   /GPU:0    /GPU:1   ...
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
