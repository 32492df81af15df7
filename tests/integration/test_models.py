"""Real models on real Horovod jobs, both frameworks: a GPT on 2 ranks equals one process on
the double batch; a 2-stage pipeline of it (tied embedding and head on different stages)
equals the unsplit model; ResNet-18's loss falls, and channels-last trains as contiguous does
(PyTorch); a recipe's own model and data, found beside
it, train through `hvdkit train -np 2`. One 2-rank job and one reference process per framework
(workers/models.py), one CLI job per framework."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.jobs import ROOT, load_arrays, max_abs_diff, run_job, worker

pytestmark = pytest.mark.integration
TOLERANCE = 1e-5
_cache: dict[tuple[str, bool], Path] = {}


@pytest.fixture(params=["torch", "tensorflow"])
def framework(request) -> str:
    return request.param


def _run(tmp_path_factory, framework: str, reference: bool) -> Path:
    key = (framework, reference)
    if key not in _cache:
        out = tmp_path_factory.mktemp(f"models-{framework}-{'ref' if reference else 'np2'}")
        args = ["--framework", framework, "--out", str(out)]
        if reference:
            run_job(worker("models", *args, "--reference"), np=1)
        else:
            run_job(worker("models", *args), np=2)
        _cache[key] = out
    return _cache[key]


def test_gpt_two_ranks_equal_one_process(tmp_path_factory, framework: str) -> None:
    single = load_arrays(_run(tmp_path_factory, framework, True) / "gpt_single.npz")
    out = _run(tmp_path_factory, framework, False)
    assert max_abs_diff(single, load_arrays(out / "gpt_dp.npz")) <= TOLERANCE
    summary = json.loads((out / "gpt_dp.json").read_text())
    assert summary["test_perplexity"] == pytest.approx(np.exp(summary["test_loss"]))
    assert 1 < summary["test_perplexity"] < 256


def test_gpt_pipeline_equals_the_unsplit_model(tmp_path_factory, framework: str) -> None:
    ref = _run(tmp_path_factory, framework, True)
    single = load_arrays(ref / "gpt_single.npz")
    out = _run(tmp_path_factory, framework, False)
    first, last = load_arrays(out / "gpt_pipe_stage0.npz"), load_arrays(out / "gpt_pipe_stage1.npz")
    # The last stage holds its own copy of the tied token embedding, before the final norm.
    tied = last.pop(-3)
    assert tied.shape == first[0].shape == (256, 16)
    assert max_abs_diff(single, first + last) <= TOLERANCE
    assert np.array_equal(tied, first[0])  # the two copies stayed equal
    # Placed over two devices in one process, the tied weight is one weight. (TensorFlow's graph
    # optimiser may order a float sum differently for the parts: 1.9e-9 seen, not exact.)
    assert max_abs_diff(single, load_arrays(ref / "gpt_placed.npz")) <= 1e-7


def test_gpt_zb_h1_and_interleaved_pipelines_keep_the_tied_weights(tmp_path_factory,
                                                                   framework: str) -> None:
    """ZB-H1 (split backward) equals the unsplit model as 1F1B does; interleaved (v = 2, its
    chunks in another order on each stage) keeps the two tied copies equal and ends with
    1F1B's test loss."""
    single = load_arrays(_run(tmp_path_factory, framework, True) / "gpt_single.npz")
    out = _run(tmp_path_factory, framework, False)
    first, last = (load_arrays(out / "gpt_zb-h1_stage0.npz"),
                   load_arrays(out / "gpt_zb-h1_stage1.npz"))
    tied = last.pop(-3)
    assert max_abs_diff(single, first + last) <= TOLERANCE
    assert np.array_equal(tied, first[0])
    first, last = (load_arrays(out / "gpt_interleaved_stage0.npz"),
                   load_arrays(out / "gpt_interleaved_stage1.npz"))
    assert first[0].shape == (256, 16)
    assert any(a.shape == first[0].shape and np.array_equal(a, first[0]) for a in last)
    loss = json.loads((out / "gpt_pipe.json").read_text())["test_loss"]
    assert json.loads((out / "gpt_interleaved.json").read_text())["test_loss"] == \
        pytest.approx(loss, abs=TOLERANCE)


def test_resnet18_small_loss_falls(tmp_path_factory, framework: str) -> None:
    losses = json.loads((_run(tmp_path_factory, framework, False) / "resnet_losses.json")
                        .read_text())
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses


def test_torch_channels_last_trains_as_contiguous_does_on_two_ranks(tmp_path_factory) -> None:
    """model.memory_format channels_last at np=2 (a GPU's default): Horovod takes contiguous
    tensors only, so hvdkit keeps the parameters contiguous; the losses are those of the
    contiguous run up to float32 rounding."""
    out = _run(tmp_path_factory, "torch", False)
    contiguous, channels_last = (json.loads((out / f"resnet_{f}.json").read_text())
                                 for f in ("contiguous", "channels_last"))
    assert len(channels_last) == len(contiguous) == 8
    assert np.allclose(channels_last, contiguous, rtol=1e-4), (channels_last, contiguous)


def test_own_model_and_data_beside_the_recipe_train_through_the_cli(
        tmp_path: Path, framework: str) -> None:
    run_dir = tmp_path / "run"
    result = run_job([sys.executable, "-m", "hvdkit", "train",
                      str(ROOT / "examples/own_model/recipe.yaml"), "-f", framework, "-np", "2",
                      "--run-dir", str(run_dir), "--no-progress", "--set", "train.epochs=2"],
                     np=1)  # hvdkit launches the two ranks itself
    assert "launching" in result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["np"] == 2 and summary["parameters"] == 30 * 32 + 32 + 32 * 2 + 2
    assert summary["test_accuracy"] > 0.9, summary


def test_user_models_as_written(tmp_path_factory, framework: str) -> None:
    """TensorFlow: a built Keras model ending in a softmax (no "Intra op parallelism cannot
    be modified" error; trained on its log-probabilities). PyTorch: a channels-first CNN."""
    summary = json.loads((_run(tmp_path_factory, framework, True) / "user_model.json")
                         .read_text())
    assert summary["outputs"] == ("logits" if framework == "torch" else "probabilities")
    assert summary["test_accuracy"] > 0.9, summary
