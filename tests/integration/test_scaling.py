"""`hvdkit scale` end to end at np 1 and 2, and `--sync ps` against ring-allreduce.

The sweep runs a tiny recipe (the digits MLP, 12 steps, 1 thread per rank) through the CLI,
as a user would; the parameter-server check trains the same recipe both ways in one job per
framework and compares the parameters.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.integration.jobs import ROOT, run_job, worker

pytestmark = pytest.mark.integration
STEPS, WARMUP = 12, 2


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    command = [sys.executable, "-m", "hvdkit", "scale", "recipes/digits_mlp.yaml",
               "--np", "1,2", "--steps", str(STEPS), "--threads", "1", "--out", str(out),
               "--timeline", "--set", f"train.timing_warmup_steps={WARMUP}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_sweep_writes_csv_json_pngs_and_report(sweep):
    import matplotlib.image

    out, stdout = sweep
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["framework"], r["np"]) for r in rows] == [("torch", "1"), ("torch", "2")]
    assert all(float(r["samples_per_sec"]) > 0 for r in rows)
    assert float(rows[0]["efficiency"]) == 1.0
    # Where the time goes: hvdkit's timer and Horovod's timeline both give a share in (0, 1).
    assert 0 < float(rows[1]["comm_share"]) < 1
    assert 0 < float(rows[1]["timeline_allreduce_share"]) < 1
    result = json.loads((out / "results.json").read_text())
    assert len(result["trials"]) == 2 and result["machine"]["cores"] >= 1
    for name in ("throughput", "efficiency", "breakdown"):
        assert matplotlib.image.imread(out / f"{name}.png").ndim == 3
    assert "[scale 2/2]" in stdout and "efficiency" in (out / "report.md").read_text()


def test_throughput_counts_what_the_ranks_processed(sweep):
    out, _ = sweep
    for trial in json.loads((out / "results.json").read_text())["trials"]:
        # Strong scaling: global batch 32 either way; every rank's samples are counted.
        assert trial["global_batch"] == 32
        assert trial["timed_samples"] == 32 * (STEPS - WARMUP)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_parameter_server_trains_like_ring_allreduce_and_none_parts_ways(tmp_path, framework):
    run_job(worker("ps_vs_ring", "--framework", framework, "--out", str(tmp_path)), np=2)
    with np.load(tmp_path / "allreduce.npz") as ring, np.load(tmp_path / "ps.npz") as ps:
        assert len(ring.files) == len(ps.files)
        for key in ring.files:
            np.testing.assert_allclose(ps[key], ring[key], atol=1e-5, rtol=0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    for sync in ("allreduce", "ps", "none"):
        assert summary[sync]["timed"]["samples"] == 2 * 16 * 4  # 2 ranks x 16 x (6 - 2) steps
        assert summary[sync]["timed"]["step_sd"] >= 0
    assert summary["ps"]["timed"]["comm_seconds"] > 0
    # the parameter tensors, forward order, for the performance model's calibration
    tensors = summary["none"]["parameter_tensors"]
    assert sum(tensors) == summary["none"]["parameters"] and tensors[:2] == [64 * 32, 32]
    # no exchange: each rank steps on its own shard's gradients and the replicas part ways,
    # where the ring keeps them equal
    exchange = summary["none"]["exchange"]
    assert exchange["sync"] == "none" and exchange["bytes_per_step"] == 0.0
    for sync, equal in (("allreduce", True), ("none", False)):
        with np.load(tmp_path / f"{sync}-rank0.npz") as a, \
                np.load(tmp_path / f"{sync}-rank1.npz") as b:
            same = all(np.allclose(a[key], b[key], atol=1e-6) for key in a.files)
        assert same is equal, sync


def test_train_names_the_tuned_defaults_it_applied(tmp_path, monkeypatch):
    import yaml

    from hvdkit.launch.defaults import save_defaults

    env = {"HVDKIT_CONFIG_DIR": str(tmp_path), "HVDKIT_NO_MACHINE_DEFAULTS": ""}
    monkeypatch.setenv("HVDKIT_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("HOROVOD_CYCLE_TIME", raising=False)
    save_defaults({"threads": 1, "cycle_time_ms": 2.0}, {"recipe": "test"})
    run_dir = tmp_path / "run"
    run_job([sys.executable, "-m", "hvdkit", "train", "recipes/digits_mlp.yaml", "--set",
             "train.max_steps=3", "--run-dir", str(run_dir), "--no-progress"], np=1, env=env)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["threads_per_rank"] == 1
    applied = config["launch"]["machine_defaults"]["applied"]
    assert applied == {"threads": 1, "HOROVOD_CYCLE_TIME": "2.0"}


def test_predict_calibrates_a_recipe_on_this_host(tmp_path):
    """`hvdkit predict RECIPE`: compute from a 2-rank job with the exchange off, the link from
    an allreduce job, the host's share from the model's own exchange; then the rows."""
    command = [sys.executable, "-m", "hvdkit", "predict", "recipes/digits_mlp.yaml", "-f",
               "torch", "--np", "1,2", "--ranks-per-host", "2", "--steps", str(STEPS),
               "--threads", "1", "--exchanges", "ring,fp16", "--out", str(tmp_path),
               "--set", f"train.timing_warmup_steps={WARMUP}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "prediction.json").read_text())
    compute = result["calibration"]["compute"]
    assert compute["ranks"] == 2 and compute["per_sample_s"] > 0 and compute["jitter"] >= 0
    assert sum(compute["tensors"]) == compute["parameters"]
    assert result["workload"]["tensors"] == compute["tensors"]
    # PyTorch's gradients, measured when ready: the output layer's (last) before the first's
    ready = result["calibration"]["ready"]
    assert len(ready) == len(compute["tensors"]) and all(0 <= f <= 1 for f in ready)
    assert ready[-2] < ready[0] == pytest.approx(1.0, abs=0.05)
    assert result["workload"]["ready"] == ready
    exchange = result["calibration"]["exchange_s"]
    assert set(exchange) == {"ring", "fp16"} and min(exchange.values()) > 0
    assert set(result["workload"]["host_per_byte"]) == {"ring", "fp16"}
    rows = {(r["exchange"], r["ranks"]): r for r in result["rows"]}
    assert set(rows) == {(e, n) for e in ("ring", "fp16") for n in (1, 2)}
    assert rows[("ring", 1)]["exposed_comm_s"] == 0.0
    for name in ("ring", "fp16"):  # two ranks wait for their exchange and for each other
        two = rows[(name, 2)]
        assert two["exposed_comm_s"] > 0 and two["step_s"] > two["compute_s"]
