"""`hvdkit info`: versions, the CPU, Horovod's build, cores and threads, launch defaults."""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
import sys
from dataclasses import fields
from importlib.util import find_spec

from hvdkit.config import TrainConfig
from hvdkit.launch.horovodrun import HOROVOD_EXTENSIONS
from hvdkit.launch.options import LaunchOptions
from hvdkit.runtime.cpu import describe_cpu
from hvdkit.runtime.world import cores, default_threads

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


def planned_launch(np_: int) -> str:
    """What `hvdkit train -np N` on this host uses, tuned defaults (for N ranks) included."""
    from hvdkit.launch.defaults import BUILT_IN, horovod_env, load_defaults

    saved = load_defaults(np_)
    controller = saved.get("controller", BUILT_IN["controller"])
    how = "in this process" if np_ == 1 else \
        "mpirun" if controller == "mpi" else f"horovodrun --{controller}"
    parts = [how, f"controller {controller}",
             f"threads/rank {saved.get('threads') or default_threads(np_)}"]
    if controller == "mpi":
        parts.append(f"yield_when_idle {saved.get('yield_when_idle', BUILT_IN['yield_when_idle'])}")
    parts += [f"{k}={v}" for k, v in horovod_env(saved).items()]
    return f"  -np {np_}: " + ", ".join(parts) + (" (tuned)" if saved else "")


def cpu_line() -> str:
    """The CPU, its vector ISA and low precisions, and the kernels torch picked for it (the
    test suite's numerical self-check ran on the ISAs the README lists)."""
    torch = sys.modules.get("torch")  # imported by package_versions where installed
    kernels = f"; torch kernels {torch.backends.cpu.get_cpu_capability()}" if torch else ""
    return f"cpu: {describe_cpu()}{kernels}"


def describe() -> str:
    lines = ["hvdkit info", "", "versions:"]
    lines += [f"  {k:<11} {v}" for k, v in package_versions().items()]
    lines += ["", cpu_line()]
    lines += ["", "horovod built with:"]
    lines += [f"  {k:<11} {v}" for k, v in horovod_build().items()]
    lines += ["", f"host: {cores()} cores. A launch on this host uses (flags override):"]
    lines += [planned_launch(n) for n in (1, 2, 4)]
    lines += ["", "launch defaults (override with hvdkit train flags):"]
    defaults = LaunchOptions()
    for f in fields(defaults):
        doc = " ".join((f.metadata.get("doc") or "").split())
        lines.append(f"  {f.name:<18} {getattr(defaults, f.name)!r} {doc}".rstrip())
    lines.append(f"  {'mpirun args':<18} {' '.join(defaults.effective_mpi_args())}")
    lines.append(f"  {'host allocator':<18} {TrainConfig.host_allocator!r} in every rank "
                 "(recipe field train.host_allocator: glibc's malloc keeps freed memory mapped; "
                 "system to opt out)")
    from hvdkit.launch.defaults import defaults_path, load_table

    table = load_table()
    lines += ["", f"this machine's tuned defaults ({defaults_path()}, from `hvdkit tune`), "
              "applied only at the ranks per host they were measured at:"]
    for ranks, entry in table.items():
        shown = ", ".join(f"{k}={v!r}" for k, v in entry["settings"].items())
        lines.append(f"  {ranks} rank(s) per host: {shown}")
    if not table:
        lines.append("  none saved")
    return "\n".join(lines)
