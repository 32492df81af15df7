"""`hvdkit tune`: short trials of the launch settings Horovod's autotune does not reach —
controller, OpenMPI's yield-when-idle, threads per rank — with fusion threshold and cycle
time, on the user's recipe; prints a table and saves the best as this machine's defaults for
launches with that many ranks on a host (-np here; `hvdkit train` applies them only there).

    hvdkit tune recipes/synthetic_cnn.yaml -np 2 --steps 30

A coordinate search: from the built-in defaults, each setting in turn tries its values with
the others held at the best so far. A change is kept only when it beats the best by more than
MARGIN, since one short trial on a shared host is noisy, and the final winner must beat the
built-in defaults again in a back-to-back rerun of both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hvdkit.bench.jobs import run_logged
from hvdkit.launch.defaults import horovod_env, save_defaults
from hvdkit.runtime.world import cores

MARGIN = 0.03


def search_space(np_: int) -> list[tuple[str, list[Any]]]:
    threads = sorted({1, max(1, cores() // np_)})
    return [("controller", ["mpi", "gloo"]), ("yield_when_idle", [True, False]),
            ("threads", threads), ("fusion_threshold_mb", [None, 8.0]),
            ("cycle_time_ms", [None, 0.5, 5.0])]


def baseline(np_: int) -> dict[str, Any]:
    return {"controller": "mpi", "yield_when_idle": True, "threads": max(1, cores() // np_),
            "fusion_threshold_mb": None, "cycle_time_ms": None}


def run_settings(recipe: str, settings: dict[str, Any], np_: int, framework: str, steps: int,
                 overrides: list[str], out: Path, index: int) -> float:
    """One short `hvdkit train` with exactly these settings; its barrier-timed samples/s."""
    run_dir = out / "runs" / f"trial-{index}"
    command = [sys.executable, "-m", "hvdkit", "train", recipe, "-f", framework,
               "-np", str(np_), "--controller", settings["controller"],
               "--threads", str(settings["threads"]), "--run-dir", str(run_dir), "--overwrite",
               "--no-progress",
               "--set", f"train.max_steps={steps}",
               "--yield-when-idle" if settings["yield_when_idle"] else "--no-yield-when-idle"]
    for item in overrides:
        command += ["--set", item]
    env = {"HVDKIT_NO_MACHINE_DEFAULTS": "1", **horovod_env(settings)}
    run_logged(command, out / "logs" / f"trial-{index}.log", env)
    summary = json.loads((run_dir / "summary.json").read_text())
    return float((summary.get("timed") or {}).get("samples_per_sec")
                 or summary["samples_per_sec"])


def _show(settings: dict[str, Any]) -> str:
    return "  ".join(f"{k}={'default' if v is None else v}" for k, v in settings.items())


def run_tune(recipe: str, np_: int = 2, framework: str = "torch", steps: int = 30,
             overrides: list[str] | None = None, out: str | Path = "tune",
             save: bool = True) -> dict[str, Any]:
    out, overrides = Path(out), overrides or []
    trials: list[dict[str, Any]] = []

    def trial(settings: dict[str, Any]) -> float:
        rate = run_settings(recipe, settings, np_, framework, steps, overrides, out, len(trials))
        trials.append({**settings, "samples_per_sec": rate})
        print(f"[tune {len(trials)}] {_show(settings)}: {rate:.0f} samples/s", flush=True)
        return rate

    best = baseline(np_)
    best_rate = trial(best)
    for name, values in search_space(np_):
        if name == "yield_when_idle" and best["controller"] != "mpi":
            continue  # an OpenMPI setting
        for value in values:
            if value == best[name]:
                continue
            candidate = {**best, name: value}
            rate = trial(candidate)
            if rate > best_rate * (1 + MARGIN):
                best, best_rate = candidate, rate
    start = baseline(np_)
    if best != start:
        # Confirm back to back: a host whose load drifts during the search favours late trials.
        again_base, again_best = trial(start), trial(best)
        if again_best <= again_base * (1 + MARGIN):
            print("[tune] the winner did not beat the built-in defaults again; keeping those")
            best, best_rate = start, again_base
        else:
            best_rate = again_best
    print(f"\n{'#':>3}  {'samples/s':>10}  settings")
    for i, row in enumerate(sorted(trials, key=lambda r: -r["samples_per_sec"]), 1):
        settings = {k: v for k, v in row.items() if k != "samples_per_sec"}
        mark = " <- best" if settings == best else ""
        print(f"{i:>3}  {row['samples_per_sec']:>10.0f}  {_show(settings)}{mark}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.json").write_text(json.dumps({"best": best, "trials": trials}, indent=2))
    if save:
        path = save_defaults(best, {"recipe": recipe, "framework": framework, "np": np_,
                                    "steps": steps, "samples_per_sec": best_rate})
        print(f"[tune] saved this machine's defaults for {np_} rank(s) per host to {path}; "
              f"`hvdkit train` uses them for launches with {np_} rank(s) per host")
    return {"best": best, "best_rate": best_rate, "trials": trials}
