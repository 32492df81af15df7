"""The tuned host allocator: freed blocks stay mapped for the next step (few page faults)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvdkit.runtime.allocator import tune_host_allocator

# Steps that allocate, touch and free blocks of 128 KiB to 16 MiB, as a training step does;
# prints the minor page faults they took.
STEPS = """
import resource, sys
import numpy as np
from hvdkit.runtime.allocator import tune_host_allocator
print(tune_host_allocator(sys.argv[1]))
rng = np.random.default_rng(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    blocks = [np.ones(int(n)) for n in rng.integers(1 << 14, 2 << 20, size=6)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", STEPS, setting], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_memory():
    applied, tuned = faults("tuned")
    assert "'host_allocator': 'tuned'" in applied
    _, system = faults("system")
    # ~6 MiB freed and retaken per step: glibc's defaults fault most of it back in each time
    assert tuned * 4 < system, (tuned, system)


def test_system_setting_leaves_glibc_alone():
    assert tune_host_allocator("system") == {"host_allocator": "system"}
