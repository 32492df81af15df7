"""`hvdkit --version`: the version and the checkout it runs from, since hvdkit is usually
installed editable and several checkouts (worktrees) may share one environment.

    hvdkit 0.1.0 (git 1a2b3c4-dirty, /work/main)     # without git: hvdkit 0.1.0 (/path)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def describe_version(root: Path = ROOT) -> str:
    """`hvdkit VERSION (git SHA[-dirty], ROOT)`; just the folder where git or a repository
    is missing."""
    try:
        sha = _git("-C", str(root), "rev-parse", "--short", "HEAD")
        dirty = _git("-C", str(root), "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return f"hvdkit {VERSION} ({root})"
    return f"hvdkit {VERSION} (git {sha}{'-dirty' if dirty else ''}, {root})"
