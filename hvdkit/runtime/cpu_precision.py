"""train.precision bf16 / fp16 on a CPU that cannot compute it natively: refused, in one line,
unless `train.precision_force: true`. Without AVX-512 BF16 / AMX (bf16) or AVX-512 FP16 (fp16)
the frameworks emulate the type, converting to float32 and back around operations, and a step
runs 2 to 14 times slower than in fp32 (SLOWDOWN): what no one should get without asking.

The same rule is checked twice: by `hvdkit train` before any rank starts (`train_on_cpu` from
the recipe and this host; exit 2), and by every rank once it knows its device (the Python API,
other launchers). On a GPU, or a CPU with native support, nothing is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from hvdkit.errors import UserError
from hvdkit.runtime.cpu import NATIVE_FLAGS, CpuFeatures, cpu_features

SLOWDOWN = {"bf16": (2, 13), "fp16": (2, 14)}
"""A step's time ÷ fp32's, lowest and highest measured on an AMD EPYC (AVX2, no AVX-512), one
process, 1 thread, paired runs interleaved (medians of 3-4 rounds): recipes/digits_cnn.yaml
bf16 2.1 (PyTorch) / 2.2 (TensorFlow), fp16 2.8 / 1.7; resnet_small.yaml at model.width 16
bf16 13.3 / 7.5, fp16 14.3 / 2.6."""


def check_cpu_precision(precision: str, force: bool, on_cpu: bool, source: str = "",
                        cpu: CpuFeatures | None = None) -> None:
    """Refuse `precision` where it would run emulated on `cpu` (this host's by default; see
    the module doc); `source`, the recipe's file, starts the message."""
    if precision == "fp32" or force or not on_cpu:
        return
    cpu = cpu or cpu_features()
    if not cpu.flags or cpu.native(precision):  # no flags: an unknown CPU is not judged
        return
    *others, last = [flag.upper() for flag in NATIVE_FLAGS[precision]]
    needs = f"{', '.join(others)} or {last}"
    where = f"{source}: " if source else ""
    low, high = SLOWDOWN[precision]
    raise UserError(
        f"{where}train.precision {precision}: this CPU ({cpu.isa}) has no {needs}, so it is "
        f"emulated: a step ran {low}x (a small CNN) to {high}x (ResNet-18) slower than in fp32 "
        f"on an AVX2 CPU; use train.precision fp32, or set train.precision_force: true to run "
        f"it anyway")


def train_on_cpu(device: str, multi_host: bool) -> bool:
    """Whether the ranks of a job launched from this host train on its CPU, as far as the
    launcher can tell without a framework: train.device cpu, or auto on one host that shows
    no GPU. Where it cannot tell (a GPU present, other hosts), the ranks check themselves."""
    if device == "cpu":
        return True
    return device == "auto" and not multi_host and not _shows_gpu()


def _shows_gpu() -> bool:
    """A GPU device file (NVIDIA's /dev/nvidia0..., AMD's /dev/kfd), unless
    CUDA_VISIBLE_DEVICES hides them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()


def device_is_cpu(device: str) -> bool:
    """A rank's device as the adapters name it (cpu, cuda:0, /CPU:0, /GPU:0) is the CPU."""
    return "cpu" in device.lower()
