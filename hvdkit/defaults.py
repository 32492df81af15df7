"""This machine's launch defaults, written by `hvdkit tune` and read by `hvdkit train`.

The file (`$HVDKIT_CONFIG_DIR/defaults.yaml`, else `$XDG_CONFIG_HOME/hvdkit/defaults.yaml`, else
`~/.config/hvdkit/defaults.yaml`) holds the settings that matter most on a CPU host and sit
outside Horovod's own autotune: controller, OpenMPI's yield-when-idle, threads per rank, and
Horovod's fusion threshold and cycle time. A flag on the command line, or a HOROVOD_* variable
already in the environment, wins over the file; the run's config.yaml names what was applied.
Set HVDKIT_NO_MACHINE_DEFAULTS=1 to ignore the file.
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


def load_defaults() -> dict[str, Any]:
    """The saved settings (empty when there is no file or it is switched off)."""
    path = defaults_path()
    if os.environ.get("HVDKIT_NO_MACHINE_DEFAULTS") or not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    settings = data.get("settings", {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise UserError(f"{path}: unknown setting {unknown[0]!r}; valid: {', '.join(SETTINGS)}")
    return {k: v for k, v in settings.items() if v is not None}


def save_defaults(settings: dict[str, Any], measured: dict[str, Any]) -> Path:
    """Write the settings (and how they were measured) as this machine's defaults."""
    path = defaults_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: settings.get(k) for k in SETTINGS}
    path.write_text(yaml.safe_dump({"settings": clean, "measured": measured}, sort_keys=False))
    return path


def horovod_env(settings: dict[str, Any]) -> dict[str, str]:
    """HOROVOD_* variables for the fusion threshold (MB → bytes) and cycle time (ms)."""
    env = {}
    if settings.get("fusion_threshold_mb") is not None:
        env[HOROVOD_ENV["fusion_threshold_mb"]] = str(int(settings["fusion_threshold_mb"] * 2**20))
    if settings.get("cycle_time_ms") is not None:
        env[HOROVOD_ENV["cycle_time_ms"]] = str(settings["cycle_time_ms"])
    return env


def apply_machine_defaults(args: argparse.Namespace) -> dict[str, Any] | None:
    """Fill the `hvdkit train` flags left unset (None) from the file, else the built-ins, and
    export its HOROVOD_* variables unless already set. Returns what was applied, or None."""
    saved = load_defaults()
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
    return {"path": str(defaults_path()), "applied": applied} if applied else None
