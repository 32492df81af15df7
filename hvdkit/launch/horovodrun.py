"""horovodrun without TensorFlow in its start-up, and what Horovod was built with, from its files.

    python -m hvdkit.launch.horovodrun -np 2 --gloo python train.py     # the same arguments

Before it starts any rank, horovodrun asks whether Horovod was built with MPI or Gloo by
importing `horovod.tensorflow`, else `horovod.torch`, in a forked process
(`horovod.common.util.mpi_built`): TensorFlow's import alone takes ~4 s here, for PyTorch jobs
too. Every framework Horovod was built with gives the same answer, so where the PyTorch
extension exists this entry point makes `horovod.tensorflow` unimportable in this process
(`sys.modules[name] = None`, Python's documented way to block an import) and the probe answers
from PyTorch (~1.5 s). Then it runs horovodrun's own command line (what the `horovodrun` script
runs) unchanged; the ranks it starts are fresh processes that import what they need.

`extension_built` finds a framework's Horovod extension without importing Horovod or the
framework: the launcher checks the build in milliseconds.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec
from pathlib import Path

# Extension modules that exist only when Horovod was built with that framework.
HOROVOD_EXTENSIONS = {
    "torch": "horovod.torch.mpi_lib_v2",
    "tensorflow": "horovod.tensorflow.mpi_lib",
}


def horovod_installed() -> bool:
    return find_spec("horovod") is not None  # a top-level spec: nothing is imported


def extension_built(framework: str) -> bool:
    """True when Horovod's extension for `framework` is installed (a file check, no import)."""
    spec = find_spec("horovod")
    if spec is None or not spec.submodule_search_locations:
        return False
    parts = HOROVOD_EXTENSIONS[framework].split(".")[1:]
    for location in spec.submodule_search_locations:
        base = Path(location).joinpath(*parts)
        if any(base.with_name(base.name + suffix).is_file() for suffix in EXTENSION_SUFFIXES):
            return True
    return False


def main() -> None:
    if extension_built("torch"):
        sys.modules["horovod.tensorflow"] = None  # type: ignore[assignment]
    sys.modules["horovod.mxnet"] = None  # type: ignore[assignment]
    from horovod.runner.launch import run_commandline

    sys.argv[0] = "horovodrun"
    run_commandline()


if __name__ == "__main__":
    main()
