"""What this host's CPU can do, read once from the kernel (framework-free).

Results and defaults must hold on an AVX2-only CPU (most cloud AMD EPYC hosts) and on an
AVX-512 one alike, so the code that depends on the instruction set asks here, and
`hvdkit info` prints it:

    >>> describe_cpu()
    'AMD EPYC (x86_64): AVX2; bf16 emulated, fp16 emulated'
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# The kernel's flag names for the instruction sets that compute a precision natively (x86:
# AVX-512 and AMX; Arm: the BF16 extension and half-precision SIMD).
NATIVE_FLAGS = {
    "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    "fp16": ("avx512_fp16", "amx_fp16", "asimdhp"),
}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and instruction-set flags (as /proc/cpuinfo spells them)."""

    model: str
    flags: frozenset[str]

    @property
    def isa(self) -> str:
        """The widest vector instruction set: AVX512, AVX2, AVX or baseline."""
        if "avx512f" in self.flags:
            return "AVX512"
        if "avx2" in self.flags:
            return "AVX2"
        return "AVX" if "avx" in self.flags else "baseline"

    def native(self, precision: str) -> bool:
        """Whether the CPU computes `precision` (bf16, fp16) in hardware; fp32 always."""
        return precision == "fp32" or any(f in self.flags for f in NATIVE_FLAGS[precision])


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from /proc/cpuinfo's text."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CpuFeatures(model or platform.processor() or "unknown", flags)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This host's CPU (no flags where /proc/cpuinfo cannot be read)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuFeatures(platform.processor() or "unknown", frozenset())


def describe_cpu() -> str:
    """One line: model, instruction set and which low precisions run natively."""
    cpu = cpu_features()
    natives = ", ".join(f"{p} {'native' if cpu.native(p) else 'emulated'}"
                        for p in NATIVE_FLAGS)
    return f"{cpu.model} ({platform.machine()}): {cpu.isa}; {natives}"
