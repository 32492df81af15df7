"""`hvdkit train --launcher ray`: the digits MLP on 2 ranks started by Horovod's RayExecutor, on
a Ray instance the command starts on this machine, both frameworks, to the recipe's usual
accuracy. Skipped where Ray is not installed (`make setup-ray`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration
pytest.importorskip("ray", reason="Ray is an optional extra: make setup-ray")


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_ray_launcher_trains_digits(tmp_path: Path, framework: str) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "hvdkit", "train", "recipes/digits_mlp.yaml", "-f", framework,
         "-np", "2", "--launcher", "ray", "--run-dir", str(run_dir), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "[hvdkit] launching on Ray (a local instance): -np 2" in output
    assert f"[hvdkit] done: {framework} np=2 test accuracy" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    assert summary["np"] == 2 and "launched_by: ray" in config
    assert summary["test_accuracy"] >= 0.95
