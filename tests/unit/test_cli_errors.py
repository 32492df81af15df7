"""Bad input through the real `hvdkit` command: one clear line, exit code 2, no worker started."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = "model: {name: mlp}\ndata: {name: digits}\noptimizer: {name: sgd}\n"


def hvdkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text, expected", [
    (GOOD + "optimiser: {name: adam}\n", "unknown key 'optimiser'"),
    (GOOD.replace("{name: sgd}", "{name: sgd, lr: fast}"), "optimizer.lr must be a number"),
    ("model: {name: mlp}\ndata: {name: digits}\n", "missing required field 'optimizer'"),
    (GOOD.replace("mlp", "transformer"), "unknown model 'transformer'; valid: mlp, cnn"),
    (GOOD.replace("digits", "imagenet"), "unknown data set 'imagenet'; valid: digits, synthetic"),
    (GOOD + "train: {batch_size: -4}\n", "train.batch_size must be at least 1"),
])
def test_bad_recipe_exits_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    started = time.perf_counter()
    result = hvdkit("train", str(recipe), "-np", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hvdkit: error: {recipe}:"), lines
    assert expected in lines[0]
    assert "launching" not in result.stderr
    assert time.perf_counter() - started < 30  # refused before any framework or worker


def test_unknown_framework_lists_valid_ones() -> None:
    result = hvdkit("train", "recipes/digits_mlp.yaml", "--framework", "jax")
    assert result.returncode == 2
    assert result.stderr.strip() == \
        "hvdkit: error: unknown framework 'jax'; valid: torch, tensorflow"


def test_bad_override_and_bad_launch_options() -> None:
    result = hvdkit("train", "recipes/digits_mlp.yaml", "--set", "optimizer.lr=-1")
    assert result.returncode == 2 and "optimizer.lr must be positive" in result.stderr
    result = hvdkit("train", "recipes/digits_mlp.yaml", "--controller", "nccl", "-np", "2")
    assert result.returncode == 2 and "unknown controller 'nccl'" in result.stderr


def test_missing_recipe_file() -> None:
    result = hvdkit("train", "recipes/nope.yaml")
    assert result.returncode == 2 and "recipes/nope.yaml does not exist" in result.stderr
