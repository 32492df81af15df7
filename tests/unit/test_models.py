"""The built-in models are the same in both frameworks: parameter counts, output shapes and the
top-level layers a pipeline cuts. One subprocess per framework builds them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.models.catalogue import gpt_parameters

WORKER = Path(__file__).with_name("model_worker.py")


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {fw: subprocess.Popen([sys.executable, str(WORKER), fw], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
             for fw in ("torch", "tensorflow")}
    results = {}
    for fw, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results[fw] = json.loads(line.removeprefix("RESULT "))
    return results


def test_each_adapter_registers_every_catalogued_model(built: dict) -> None:
    for fw in ("torch", "tensorflow"):
        assert built[fw]["names"] == built[fw]["catalogue"], fw


def test_resnet50_on_imagenet_has_the_papers_parameter_count(built: dict) -> None:
    for fw in ("torch", "tensorflow"):
        assert built[fw]["resnet50_imagenet_1000"]["params"] == 25_557_032, fw
        assert built[fw]["resnet18_imagenet_1000"]["params"] == 11_689_512, fw


def test_parameter_counts_and_shapes_equal_across_frameworks(built: dict) -> None:
    torch_, tf = built["torch"], built["tensorflow"]
    for case in ("mlp", "cnn", "cnn_channels_first", "resnet18_small", "resnet50_small_cf",
                 "resnet34_imagenet", "gpt"):
        assert torch_[case] == tf[case], case
    assert torch_["resnet18_small"]["shape"] == [2, 10]
    assert torch_["resnet50_small_cf"]["shape"] == [2, 7]
    assert torch_["gpt"]["shape"] == [2, 12, 50]


def test_gpt_parameters_match_the_formula(built: dict) -> None:
    assert built["torch"]["gpt"]["params"] == gpt_parameters(3, 16, 16, 50)


def test_pipelines_cut_the_layers_the_catalogue_counts(built: dict) -> None:
    for case, row in built["torch"].items():
        if isinstance(row, dict) and row.get("layer_count") is not None:
            assert row["cuttable"] == row["layer_count"], case
    assert built["torch"]["gpt"]["cuttable"] == 3 + 2  # embeddings, 3 blocks, head


def test_the_task_follows_the_data() -> None:
    import numpy as np

    from hvdkit.data import Dataset
    from hvdkit.models.tasks import task_for

    tokens = np.zeros((4, 8), np.int64)
    lm = task_for(Dataset(tokens, tokens, tokens, tokens, num_classes=256))
    assert lm.name == "language_model" and lm.per_token
    metrics = lm.test_metrics([2.0 * 64, 16.0, 64.0])
    assert metrics["test_perplexity"] == pytest.approx(np.exp(2.0))
    assert metrics["test_accuracy"] == 0.25
    images = np.zeros((4, 8, 8, 1), np.float32)
    labels = np.zeros(4, np.int64)
    task = task_for(Dataset(images, labels, images, labels, 10), outputs="probabilities")
    assert (task.name, task.outputs) == ("classification", "probabilities")
    assert "test_perplexity" not in task.test_metrics([1.0, 2.0, 4.0])
