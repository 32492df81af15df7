"""Layout fields mean what they say per framework: one recipe with model.channels_first and a
builder for each framework trains on both from the command line (PyTorch's model is built for
and fed (C, H, W), Keras's (H, W, C)); a builder that fails is one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

BUILDER = '''
def torch_model(input_shape, num_classes):
    from torch import nn
    assert input_shape == (1, 8, 8), input_shape
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, num_classes))


def keras_model(input_shape, num_classes):
    import keras
    assert input_shape == (8, 8, 1), input_shape
    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(4, 3, padding="same",
                             activation="relu"), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes)])


def both(input_shape, num_classes):
    return {"torch": torch_model, "tensorflow": keras_model}


def broken(input_shape, num_classes):
    raise ValueError("Input 0 of layer conv2d is incompatible with the layer\\nmore detail")
'''


def train(tmp_path: Path, framework: str, builder: str) -> subprocess.CompletedProcess:
    (tmp_path / "conv_builders.py").write_text(BUILDER)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{builder: 'conv_builders:{builder}', channels_first: true}}\n"
                      "data: {name: digits}\noptimizer: {name: sgd, lr: 0.1}\n"
                      "train: {batch_size: 64, epochs: 1, max_steps: 4, threads: 1}\n")
    run = tmp_path / f"run-{framework}-{builder}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "hvdkit", "train", str(recipe), "-f", framework,
                           "-np", "1", "--run-dir", str(run), "--no-progress",
                           "--no-tensorboard"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_channels_first_recipe_trains_on_both(tmp_path: Path, framework: str) -> None:
    result = train(tmp_path, framework, "both")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / f"run-{framework}-both" / "summary.json").read_text())
    assert summary["steps"] == 4 and 0 <= summary["test_accuracy"] <= 1


def test_builder_failure_is_one_line(tmp_path: Path) -> None:
    result = train(tmp_path, "tensorflow", "broken")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert any("model.builder 'conv_builders:broken' failed to build a model for inputs of "
               "shape (8, 8, 1): ValueError: Input 0 of layer conv2d" in line for line in errors)
    assert "more detail" not in result.stderr
