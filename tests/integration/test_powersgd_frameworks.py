"""PowerSGD compresses the same recipe alike on both frameworks: a short 2-rank run of a
shrunk recipes/resnet_small.yaml on each reports compression ratios within 5% of each other
(Keras kernels viewed as output channels x the rest, as PyTorch's weights are)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.jobs import run_job

pytestmark = pytest.mark.integration
SETTINGS = ["model.width=16", "data.samples=256", "data.shape=[16, 16, 3]", "train.epochs=1",
            "train.max_steps=2", "train.batch_size=16", "train.threads=1",
            "parallel.compression=powersgd", "parallel.powersgd_warmup_steps=0"]


def ratio(tmp_path: Path, framework: str) -> float:
    run = tmp_path / framework
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    run_job([sys.executable, "-m", "hvdkit", "train", "recipes/resnet_small.yaml", "-f",
             framework, "-np", "2", "--run-dir", str(run), "--no-progress", "--no-tensorboard",
             *sets], np=1, timeout=600)
    return json.loads((run / "summary.json").read_text())["exchange"]["compression_ratio"]


def test_same_compression_ratio_on_both_frameworks(tmp_path: Path) -> None:
    torch_ratio, tf_ratio = ratio(tmp_path, "torch"), ratio(tmp_path, "tensorflow")
    print(f"compression ratio: torch {torch_ratio:.2f}, tensorflow {tf_ratio:.2f}")
    assert torch_ratio > 1
    assert abs(tf_ratio - torch_ratio) <= 0.05 * torch_ratio
