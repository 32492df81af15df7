"""BatchNorm statistics across replicas, both frameworks, on a shrunk resnet_small
(workers/batchnorm.py): a 2-rank run reports the test metrics of the model its checkpoint
holds (the replicas' statistics averaged before evaluating and saving), and with
model.sync_batchnorm a 2-rank run trains as one process on the double batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hvdkit.recipe import recipe_from_dict
from hvdkit.training.checkpoint import load_latest
from tests.integration.jobs import run_job, worker

pytestmark = pytest.mark.integration
SYNC_TOLERANCE = 1e-4  # 3 steps of SGD with momentum; float32 sums in another order
_cache: dict[str, dict] = {}


@pytest.fixture(scope="module", params=["torch", "tensorflow"])
def results(request, tmp_path_factory) -> dict:
    fw = request.param
    if fw not in _cache:
        out = tmp_path_factory.mktemp(f"batchnorm-{fw}")
        run_job(worker("batchnorm", "--framework", fw, "--out", str(out)), np=2, timeout=600)
        run_job(worker("batchnorm", "--framework", fw, "--out", str(out)), np=1, timeout=600)
        found = {**json.loads((out / "np2.json").read_text()),
                 **json.loads((out / "np1.json").read_text())}
        found["params"] = {run: checkpoint_arrays(out / run) for run in ("plain", "sync",
                                                                          "single")}
        _cache[fw] = found
    return _cache[fw]


def checkpoint_arrays(run) -> list[np.ndarray]:
    """The model state (parameters and statistics) of the run's newest checkpoint."""
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    _, payload = load_latest(run, recipe_from_dict(config["recipe"]))
    model = payload["state"]["model"]
    items = model.values() if isinstance(model, dict) else model
    return [np.asarray(a, np.float64) for a in items if np.asarray(a).dtype.kind == "f"]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_reported_metrics_are_the_checkpoints(results: dict) -> None:
    reported, checkpoint = results["plain"], results["plain_checkpoint"]
    assert reported["test_accuracy"] == checkpoint["test_accuracy"]
    assert reported["test_loss"] == pytest.approx(checkpoint["test_loss"], rel=1e-5)


def test_sync_batchnorm_trains_as_one_process(results: dict) -> None:
    params = results["params"]
    synced = max_diff(params["sync"], params["single"])
    control = max_diff(params["plain"], params["single"])
    print(f"sync vs one process: {synced:.2e}; unsynchronised vs one process: {control:.2e}")
    assert synced <= SYNC_TOLERANCE, synced
    # The control: each replica's own statistics train another model.
    assert control > 10 * SYNC_TOLERANCE
