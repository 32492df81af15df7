"""Architecture rules that keep hvdkit framework-free outside its adapters."""

import subprocess
import sys

import pytest

from hvdkit.models import MODEL_NAMES


def test_import_hvdkit_loads_no_framework() -> None:
    code = ("import sys, hvdkit, hvdkit.cli, hvdkit.trainer, hvdkit.launcher; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'horovod', 'mpi4py') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_each_adapter_builds_every_catalogued_model(framework: str) -> None:
    """Run in a subprocess: one framework per process, as in real runs."""
    code = f"""
import numpy as np
from hvdkit.adapters.{framework} import MODELS
from hvdkit.models import MODEL_NAMES
from hvdkit.recipe import ModelConfig
assert MODELS.names() == sorted(MODEL_NAMES), MODELS.names()
for name in MODEL_NAMES:
    model = MODELS.get(name)(ModelConfig(name=name), (8, 8, 1), 10)
    out = model({'np.zeros((3, 8, 8, 1), np.float32)' if framework == 'tensorflow'
                 else '__import__("torch").zeros(3, 8, 8, 1)'})
    assert tuple(out.shape) == (3, 10), (name, out.shape)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", **__import__("os").environ})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
    assert set(MODEL_NAMES) == {"mlp", "cnn"}
