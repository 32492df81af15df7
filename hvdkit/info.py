"""`hvdkit info`: versions, Horovod's build, this host's cores and threads, launch defaults."""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
from dataclasses import fields
from importlib.util import find_spec

from hvdkit.horovodrun import HOROVOD_EXTENSIONS
from hvdkit.launcher import LaunchOptions
from hvdkit.world import cores, default_threads

_PACKAGES = ("numpy", "torch", "tensorflow", "keras", "horovod", "mpi4py")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:
            versions[name] = "not installed"
    versions["mpi"] = mpi_version()
    return versions


def mpi_version() -> str:
    if shutil.which("mpirun") is None:
        return "not installed"
    out = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def horovod_build() -> dict[str, str]:
    """What Horovod was built with, per framework, from its public *_built() functions."""
    built = {}
    for framework, extension in HOROVOD_EXTENSIONS.items():
        try:
            # TF's extension is an op library that horovod.tensorflow loads, not a module.
            if find_spec(extension) is None:
                raise ImportError(extension)
            hvd = importlib.import_module(f"horovod.{framework}")
        except Exception:  # a missing or broken build is what we report
            built[framework] = "not built"
            continue
        parts = [name for name in ("mpi", "gloo", "nccl") if getattr(hvd, f"{name}_built")()]
        built[framework] = "yes (" + ", ".join(parts) + ")"
    return built


def describe() -> str:
    lines = ["hvdkit info", "", "versions:"]
    lines += [f"  {k:<11} {v}" for k, v in package_versions().items()]
    lines += ["", "horovod built with:"]
    lines += [f"  {k:<11} {v}" for k, v in horovod_build().items()]
    lines += ["", f"host: {cores()} cores; intra-op threads per rank by default:"]
    lines += [f"  -np {n}: {default_threads(n)}" for n in (1, 2, 4)]
    lines += ["", "launch defaults (override with hvdkit train flags):"]
    defaults = LaunchOptions()
    for f in fields(defaults):
        doc = " ".join((f.metadata.get("doc") or "").split())
        lines.append(f"  {f.name:<18} {getattr(defaults, f.name)!r} {doc}".rstrip())
    lines.append(f"  {'mpirun args':<18} {' '.join(defaults.effective_mpi_args())}")
    from hvdkit.defaults import defaults_path, load_defaults

    saved = load_defaults()
    lines += ["", f"this machine's tuned defaults ({defaults_path()}, from `hvdkit tune`):"]
    lines += [f"  {k:<18} {v!r}" for k, v in saved.items()] or ["  none saved"]
    return "\n".join(lines)
