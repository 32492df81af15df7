"""`hvdkit --version` names the checkout it runs from (hvdkit.version)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hvdkit.version import VERSION, describe_version

ROOT = Path(__file__).resolve().parents[2]


def test_version_names_the_commit_and_folder_of_this_checkout() -> None:
    out = subprocess.run([sys.executable, "-m", "hvdkit", "--version"], cwd="/",
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"hvdkit {VERSION} (git {sha}")
    assert out.stdout.endswith(f", {ROOT})\n")


def test_version_without_a_repository_is_the_folder(tmp_path: Path) -> None:
    assert describe_version(tmp_path) == f"hvdkit {VERSION} ({tmp_path})"
