"""One recipe's optimizer means one update on both frameworks: sgd and adam with L2 weight
decay, adamw and lamb with decoupled decay give the same parameters after 5 steps from the same
weights and batches (tests/unit/optimizer_worker.py, one subprocess per framework); LAMB also
matches the paper's formula written here in numpy; ZeRO-1 keeps the elementwise optimizers'
results and would change LAMB's, which the recipe check therefore refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hvdkit.errors import UserError
from hvdkit.recipe import load_recipe
from tests.unit.optimizer_worker import CASES, problem

WORKER = Path(__file__).with_name("optimizer_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("optimizers")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    procs = {fw: subprocess.Popen([sys.executable, str(WORKER), fw, str(out / f"{fw}.npz")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env)
             for fw in ("torch", "tensorflow")}
    loaded = {}
    for fw, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-4000:]
        with np.load(out / f"{fw}.npz") as z:
            loaded[fw] = dict(z)
    return loaded


def params(arrays: dict[str, np.ndarray], case: str) -> list[np.ndarray]:
    return [arrays[f"{case}/{i}"] for i in range(2)]


def diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_frameworks_agree(results: dict, case: str) -> None:
    assert diff(params(results["torch"], case), params(results["tensorflow"], case)) \
        <= TOLERANCE


def test_weight_decay_changes_the_result(results: dict) -> None:
    """The decay is applied at all, and L2 (adam) is not decoupled decay (adamw)."""
    torch = results["torch"]
    assert diff(params(torch, "sgd"), params(torch, "sgd_wd")) > 1e-3
    assert diff(params(torch, "adam_wd"), params(torch, "adamw")) > 1e-3


def lamb_reference(lr: float, wd: float, eps: float = 1e-6) -> list[np.ndarray]:
    """LAMB (You et al., 2019, algorithm 2) in float64 on the worker's least-squares problem."""
    weights, batches = problem()
    w = [a.astype(np.float64) for a in weights]
    m, v = [np.zeros_like(a) for a in w], [np.zeros_like(a) for a in w]
    for t, (x, y) in enumerate(batches, start=1):
        residual = 2 * (x @ w[0] + w[1] - y) / y.size
        grads = [x.T @ residual, residual.sum(0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            r = (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + eps) + wd * w[i]
            w[i] = w[i] - lr * np.linalg.norm(w[i]) / np.linalg.norm(r) * r
    return w


@pytest.mark.parametrize("case", ["lamb", "lamb_no_wd"])
def test_lamb_is_the_papers(results: dict, case: str) -> None:
    config = CASES[case]
    expected = lamb_reference(config.lr, config.weight_decay)
    for fw in ("torch", "tensorflow"):
        assert diff(params(results[fw], case), expected) <= 1e-5, fw


@pytest.mark.parametrize("fw", ["torch", "tensorflow"])
def test_zero1_keeps_elementwise_optimizers(results: dict, fw: str) -> None:
    arrays = results[fw]
    for case in ("sgd_wd", "adam_wd", "adamw"):
        assert diff(params(arrays, case), params(arrays, f"{case}/zero")) <= TOLERANCE, case
    # One flat shard has one trust ratio, not one per tensor: why lamb x zero1 is refused.
    assert diff(params(arrays, "lamb"), params(arrays, "lamb/zero")) > 1e-4


def test_lamb_with_zero1_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mlp}\ndata: {name: digits}\n"
                      "optimizer: {name: lamb, lr: 0.01}\nparallel: {sync: zero1}\n")
    with pytest.raises(UserError, match=r"lamb.*parallel\.sync allreduce"):
        load_recipe(recipe)
    load_recipe(recipe, ["optimizer.name=adamw"])  # elementwise: accepted


def test_a_field_the_optimizer_would_ignore_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: mlp}\ndata: {name: digits}\n"
                      "optimizer: {name: lamb, lr: 0.01, momentum: 0.9}\n")
    with pytest.raises(UserError) as refused:
        load_recipe(recipe)
    assert str(refused.value) == (
        f"{recipe}: optimizer.momentum is read only by optimizer.name sgd, and would be "
        "ignored with lamb; remove it or set optimizer.name sgd")
    for name in ("adam", "adamw"):
        with pytest.raises(UserError, match=r"optimizer\.momentum is read only by"):
            load_recipe(recipe, [f"optimizer.name={name}"])
    load_recipe(recipe, ["optimizer.name=sgd"])
    load_recipe(recipe, ["optimizer.momentum=0"])  # the default: nothing ignored
    # The step schedule's fields, with another schedule.
    with pytest.raises(UserError, match=r"optimizer\.step_gamma is read only by "
                                        r"optimizer\.schedule step.*with cosine"):
        load_recipe(recipe, ["optimizer.momentum=0", "optimizer.schedule=cosine",
                             "optimizer.step_gamma=0.5"])
    load_recipe(recipe, ["optimizer.momentum=0", "optimizer.schedule=step",
                         "optimizer.step_gamma=0.5", "optimizer.step_every_epochs=2"])
