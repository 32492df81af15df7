"""This machine's launch defaults, written by `hvdkit tune` and read by `hvdkit train`.

The file (`$HVDKIT_CONFIG_DIR/defaults.yaml`, else `$XDG_CONFIG_HOME/hvdkit/defaults.yaml`, else
`~/.config/hvdkit/defaults.yaml`) holds the settings that matter most on a CPU host and sit
outside Horovod's own autotune: controller, OpenMPI's yield-when-idle, threads per rank, and
Horovod's fusion threshold and cycle time. They are kept per number of ranks on a host, the
count they were measured at (`hvdkit tune -np 2` measures 2 ranks on this host), and applied
only to launches with that many ranks per host: one thread per rank is right for 2 ranks on 2
cores and wrong for 1. A flag on the command line, or a HOROVOD_* variable already in the
environment, wins over the file; the run's config.yaml names what was applied.
Set HVDKIT_NO_MACHINE_DEFAULTS=1 to ignore the file.

    by_ranks_per_host:
      2:
        settings: {controller: mpi, yield_when_idle: true, threads: 1, ...}
        measured: {recipe: ..., np: 2, samples_per_sec: ...}
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from hvdkit.errors import UserError

SETTINGS: dict[str, type] = {"controller": str, "yield_when_idle": bool, "threads": int,
                             "fusion_threshold_mb": float, "cycle_time_ms": float}
BUILT_IN = {"controller": "mpi", "yield_when_idle": True}
HOROVOD_ENV = {"fusion_threshold_mb": "HOROVOD_FUSION_THRESHOLD",
               "cycle_time_ms": "HOROVOD_CYCLE_TIME"}


def defaults_path() -> Path:
    if os.environ.get("HVDKIT_CONFIG_DIR"):
        return Path(os.environ["HVDKIT_CONFIG_DIR"]) / "defaults.yaml"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "hvdkit" / "defaults.yaml"


def _check(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise UserError(f"{path}: unknown setting {unknown[0]!r}; valid: {', '.join(SETTINGS)}")
    return {k: v for k, v in settings.items() if v is not None}


def load_table() -> dict[int, dict[str, Any]]:
    """ranks per host → {"settings", "measured"}: everything saved (empty when there is no file
    or it is switched off). A file of the older flat form counts as measured at its `np`."""
    path = defaults_path()
    if os.environ.get("HVDKIT_NO_MACHINE_DEFAULTS") or not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if "settings" in data:  # written before defaults were kept per ranks per host
        measured = data.get("measured") or {}
        data = {"by_ranks_per_host": {int(measured.get("np", 1)): data}}
    table = {}
    for ranks, entry in (data.get("by_ranks_per_host") or {}).items():
        table[int(ranks)] = {"settings": _check(path, entry.get("settings") or {}),
                             "measured": entry.get("measured") or {}}
    return table


def load_defaults(ranks_per_host: int) -> dict[str, Any]:
    """The settings measured with this many ranks per host (empty when none were)."""
    return load_table().get(ranks_per_host, {}).get("settings", {})


def save_defaults(settings: dict[str, Any], measured: dict[str, Any]) -> Path:
    """Save the settings as this machine's defaults for the ranks per host they were measured
    at (`measured["np"]`, a one-host measurement; 1 if absent); other counts' are kept."""
    path = defaults_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    table = load_table() if not os.environ.get("HVDKIT_NO_MACHINE_DEFAULTS") else {}
    table[int(measured.get("np", 1))] = {"settings": {k: settings.get(k) for k in SETTINGS},
                                         "measured": measured}
    path.write_text(yaml.safe_dump({"by_ranks_per_host": dict(sorted(table.items()))},
                                   sort_keys=False))
    return path


def ranks_per_host(np_: int, hosts: str | None = None, hostfile: str | None = None) -> int:
    """The most ranks a launch puts on one host: `np_` on one host; with a host list, ranks
    fill each host's slots in order (as horovodrun and mpirun place them)."""
    if not (hosts or hostfile):
        return np_
    entries = hosts.split(",") if hosts else []
    if hostfile and Path(hostfile).is_file():  # a missing one is reported by the launcher
        for line in Path(hostfile).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, rest = line.partition(" ")
                slots = rest.replace(" ", "").removeprefix("slots=")
                entries.append(f"{name}:{slots}" if slots.isdigit() else name)
    most, left = 0, np_
    for entry in entries:
        _, _, slots = entry.strip().rpartition(":")
        take = min(int(slots) if slots.isdigit() else 1, left)
        most, left = max(most, take), left - take
    return max(most, 1) if entries else np_


def horovod_env(settings: dict[str, Any]) -> dict[str, str]:
    """HOROVOD_* variables for the fusion threshold (MB → bytes) and cycle time (ms)."""
    env = {}
    if settings.get("fusion_threshold_mb") is not None:
        env[HOROVOD_ENV["fusion_threshold_mb"]] = str(int(settings["fusion_threshold_mb"] * 2**20))
    if settings.get("cycle_time_ms") is not None:
        env[HOROVOD_ENV["cycle_time_ms"]] = str(settings["cycle_time_ms"])
    return env


def apply_machine_defaults(args: argparse.Namespace) -> dict[str, Any] | None:
    """Fill the `hvdkit train` flags left unset (None) from the file's settings for this
    launch's ranks per host, else the built-ins, and export its HOROVOD_* variables unless
    already set. Returns what was applied, or None."""
    ranks = ranks_per_host(getattr(args, "np", 1) or 1, getattr(args, "hosts", None),
                           getattr(args, "hostfile", None))
    saved = load_defaults(ranks)
    applied: dict[str, Any] = {}
    for name in ("controller", "yield_when_idle", "threads"):
        if getattr(args, name, None) is None:
            value = saved.get(name, BUILT_IN.get(name))
            setattr(args, name, value)
            if name in saved:
                applied[name] = value
    for name, value in horovod_env(saved).items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return {"path": str(defaults_path()), "ranks_per_host": ranks, "applied": applied} \
        if applied else None
