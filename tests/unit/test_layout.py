"""Architecture rules that keep hvdkit framework-free outside its adapters (that each adapter
builds every catalogued model is checked in test_models.py)."""

import subprocess
import sys


def test_import_hvdkit_loads_no_framework() -> None:
    code = ("import sys, hvdkit, hvdkit.cli, hvdkit.trainer, hvdkit.launch.job; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'horovod', 'mpi4py') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
