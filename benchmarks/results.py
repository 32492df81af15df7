"""Benchmarks record their headline table here, for the docs to render (never retyped).

    record("bench_predict", "predicted ÷ measured throughput, np=2", columns, rows, note)

writes benchmarks/results/<name>.json with where and when it was measured: the date, the commit,
the host's CPU (hvdkit.runtime.cpu.describe_cpu), cores, GPU and load average at the start.
docs/gen_reference.py renders every file there on the "Performance and measurements" page.
Commit a result file when its figures should appear in the docs.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hvdkit"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _gpu() -> str:
    if not shutil.which("nvidia-smi"):
        return ""
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return ", ".join(sorted(set(out.stdout.split("\n")) - {""}))


def host(load: float | None = None) -> dict[str, Any]:
    """Where a benchmark runs; `load`: the load average at its start (default: now)."""
    from hvdkit.runtime.cpu import describe_cpu

    return {"cpu": describe_cpu(), "cores": os.cpu_count(), "gpu": _gpu(),
            "load": round(os.getloadavg()[0] if load is None else load, 2)}


def record(name: str, title: str, columns: list[str], rows: list[dict[str, Any]],
           note: str = "", load: float | None = None) -> Path:
    """Write benchmarks/results/<name>.json (replacing the previous one) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "title": title,
            "date": datetime.date.today().isoformat(), "commit": _commit(),
            "host": host(load), "columns": columns, "rows": rows, "note": note}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"[results] {path.relative_to(ROOT)}", flush=True)
    return path
