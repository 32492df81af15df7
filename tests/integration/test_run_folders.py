"""Run folders from the command line (one rank, TensorFlow): a second run into a run's folder
exits 2; `--resume` with a new learning rate continues it; `hvdkit export` writes a .keras
model that gives the run's test accuracy; `--overwrite` replaces the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration


def hvdkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def train(run_dir: Path, *extra: str, framework: str = "tensorflow") -> subprocess.CompletedProcess:
    return hvdkit("train", "recipes/digits_mlp.yaml", "-f", framework, "--no-progress",
                  "--threads", "1", "--run-dir", str(run_dir), *extra)


def test_run_folder_resume_export_and_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train(run_dir, "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]

    again = train(run_dir, "--set", "train.epochs=1")
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(f"hvdkit: error: run folder {run_dir} holds another run")

    resumed = train(run_dir, "--resume", "--set", "optimizer.lr=0.004", "--set",
                    "train.epochs=2")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "resumed from" in output and "epoch 2, step 44" in output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 88  # 44 steps per epoch at one rank, batch 32

    exported = hvdkit("export", str(run_dir))
    assert exported.returncode == 0, exported.stderr[-3000:]
    accuracy = subprocess.run([sys.executable, "-c", f"""
import keras, numpy as np
from hvdkit import load_recipe
from hvdkit.data import build_source
recipe = load_recipe({str(run_dir / 'export' / 'recipe.yaml')!r})
data = build_source(recipe.data, recipe.train.seed)
x_test, y_test = data.test.take(np.arange(len(data.test)))
model = keras.saving.load_model({str(run_dir / 'export' / 'model.keras')!r})
print(float((np.argmax(model.predict(x_test, verbose=0), 1) == y_test).mean()))
"""], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert accuracy.returncode == 0, accuracy.stderr[-3000:]
    assert float(accuracy.stdout.split()[-1]) == pytest.approx(summary["test_accuracy"], abs=1e-9)

    replaced = train(run_dir, "--overwrite", "--set", "train.max_steps=3", framework="torch")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [0, 1, 2]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["ckpt-00000003.hvdk"]
    assert not (run_dir / "export").exists()


def test_two_runs_started_at_once_get_two_folders(tmp_path: Path) -> None:
    """Two `hvdkit train` without --run-dir, started in the same second from one folder: two
    run folders (runs/<name>-...-<time> and its `-2`), each with its own whole run."""
    command = [sys.executable, "-m", "hvdkit", "train", str(ROOT / "recipes/digits_mlp.yaml"),
               "-f", "torch", "--no-progress", "--threads", "1", "--set", "train.epochs=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2, folders
    for folder in folders:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        epochs = [json.loads(line) for line in lines if '"epoch_time"' in line]
        assert len(epochs) == 1  # one run's epoch, not two runs' rows mixed
        assert json.loads((folder / "summary.json").read_text())["run_dir"] == str(
            folder.relative_to(tmp_path))
