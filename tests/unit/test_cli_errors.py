"""Bad input through the real `hvdkit` command: one clear line, exit code 2, no worker started."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    (GOOD.replace("digits", "imagenet"),
     "valid: digits, images, npy, synthetic, text, tokens, webdataset"),
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


def _data_cases(tmp: Path) -> list[tuple[str, str]]:
    """(data section, expected message) for each bad input of a file source."""
    np.save(tmp / "x_train.npy", np.zeros((10, 4, 4, 1), dtype=np.uint8))
    np.save(tmp / "y_train.npy", np.arange(9))
    (tmp / "lengths").mkdir()
    np.save(tmp / "lengths" / "x_train.npy", np.zeros((10, 4, 4, 1), dtype=np.uint8))
    np.save(tmp / "lengths" / "y_train.npy", np.zeros(9, dtype=np.int64))
    (tmp / "labels").mkdir()
    np.save(tmp / "labels" / "x_train.npy", np.zeros((10, 4, 4, 1), dtype=np.uint8))
    np.save(tmp / "labels" / "y_train.npy", np.arange(10))
    (tmp / "flat").mkdir()
    np.save(tmp / "flat" / "x_train.npy", np.zeros((10, 16), dtype=np.float32))
    np.save(tmp / "flat" / "y_train.npy", np.zeros(10, dtype=np.int64))
    (tmp / "latin.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    (tmp / "odd.bin").write_bytes(b"\x00" * 101)
    np.full(100, 70, dtype=np.uint16).tofile(tmp / "ids.bin")
    return [
        (f"{{name: npy, path: {tmp}/none}}", f"data.path: {tmp}/none does not exist"),
        (f"{{name: npy, path: {tmp}/lengths}}", "x_train.npy and y_train.npy: 10 inputs but 9"),
        (f"{{name: npy, path: {tmp}/labels, classes: 5}}", "label 9 is outside [0, 5)"),
        (f"{{name: npy, path: {tmp}/flat}}", "model cnn takes samples of 3 dimensions"),
        (f"{{name: text, path: {tmp}/latin.txt, block_size: 4}}", "not UTF-8 text (byte 3"),
        (f"{{name: tokens, path: {tmp}/odd.bin, block_size: 4, vocab_size: 50}}",
         "holds 101 bytes, not a whole number of uint16"),
        (f"{{name: tokens, path: {tmp}/ids.bin, block_size: 4, vocab_size: 50}}",
         "token id 70 (at position 0) is not below data.vocab_size 50"),
    ]


def test_bad_data_exits_2_with_one_line_before_any_worker(tmp_path: Path) -> None:
    for data, expected in _data_cases(tmp_path):
        recipe = tmp_path / "bad.yaml"
        recipe.write_text(f"model: {{name: cnn}}\ndata: {data}\noptimizer: {{name: sgd}}\n")
        result = hvdkit("train", str(recipe), "-np", "2")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (data, result.stderr)
        assert lines[0].startswith("hvdkit: error: ") and expected in lines[0], lines
        assert "launching" not in result.stderr
