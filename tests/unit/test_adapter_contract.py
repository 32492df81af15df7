"""Every adapter implements the whole contract of hvdkit.adapters.base.Adapter, role by role
(model and step, pipeline-stage operations, exchange hooks, state and collectives), and the
framework-free code uses only members the contract declares (so nothing probes with hasattr)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.adapters.base import FRAMEWORKS, Adapter

ATTRIBUTES = ("threads", "device", "task", "input_dtype", "channels_first", "tied", "exchange")
"""Instance attributes every adapter has (set in Adapter.__init__)."""
HVDKIT = Path(__file__).resolve().parents[2] / "hvdkit"
USERS = [HVDKIT / "trainer.py", *(HVDKIT / "training" / name
                                  for name in ("checkpoint.py", "metrics.py", "summary.py")),
         *sorted((HVDKIT / "parallel").glob("*.py"))]


def test_framework_free_code_uses_only_declared_members() -> None:
    used: set[str] = set()
    for path in USERS:
        used |= set(re.findall(r"\badapter\.([a-zA-Z_]\w*)", path.read_text()))
    assert used, "the scan found no adapter use"
    undeclared = sorted(name for name in used if not hasattr(Adapter, name)
                        and name not in (*ATTRIBUTES, "hvd"))
    assert undeclared == []
    for path in USERS:
        assert "hasattr(" not in path.read_text(), path


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_each_adapter_implements_the_contract(framework: str) -> None:
    """In a subprocess: one framework per process, as in real runs."""
    code = f"""
import inspect
from hvdkit.adapters.base import Adapter, get_adapter
from hvdkit.adapters.roles import (ExchangeHooks, ModelAndStep, PipelineStageOps,
                                   StateAndCollectives)
adapter = get_adapter({framework!r})
cls = type(adapter)
assert issubclass(cls, Adapter) and not inspect.isabstract(cls), cls.__abstractmethods__
for role in (ModelAndStep, PipelineStageOps, ExchangeHooks, StateAndCollectives):
    assert role.__abstractmethods__, role  # each role declares what its callers use
    for name in role.__abstractmethods__:
        mine = getattr(cls, name)
        assert not getattr(mine, "__isabstractmethod__", False), (role.__name__, name)
        assert list(inspect.signature(mine).parameters) == \\
            list(inspect.signature(getattr(role, name)).parameters), (role.__name__, name)
for name in {ATTRIBUTES!r}:
    assert hasattr(adapter, name), name
assert adapter.framework == {framework!r} and adapter.hvd is not None
for name, member in inspect.getmembers(Adapter, inspect.isfunction):
    if not name.startswith("_"):
        mine = getattr(cls, name)
        assert list(inspect.signature(mine).parameters) == \\
            list(inspect.signature(member).parameters), name
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
