"""Image batches that arrive as uint8 (N, H, W, C), a quarter of float32's host-to-device
traffic, made float32 and normalised on their device: (x / 255 - mean) / std per channel."""

from __future__ import annotations

from typing import Any

import torch

_CONSTANTS: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(x: torch.Tensor, normalization: Any) -> torch.Tensor:
    """`x` normalised where it is uint8 and `normalization` is (mean, std); else `x`."""
    if normalization is None or x.dtype != torch.uint8:
        return x
    mean, std = normalization
    key = (x.device, tuple(mean), tuple(std))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (torch.tensor([255 * m for m in mean], device=x.device),
                           torch.tensor([1 / (255 * s) for s in std], device=x.device))
    shift, scale = _CONSTANTS[key]
    return (x.to(torch.float32) - shift) * scale
