"""`hvdkit predict` on a described cluster: its files, and one line and exit 2 for a
description that cannot give a number."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
model: {parameters: 1000000, dtype: float32}
compute: {samples_per_sec: 100, batch_per_device: 10}
cluster:
  devices_per_host: 2
  hosts: [1, 4]
  intra_host: {bandwidth: 10GB/s, latency: 5us}
  inter_host: {bandwidth: 1Gbit/s, latency: 50us}
"""


def predict(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "hvdkit", "predict", str(path), "--out",
                           str(tmp_path / "out"), *extra], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
                          timeout=120)


def test_description_writes_json_csv_png(tmp_path):
    proc = predict(tmp_path, GOOD, "--exchanges", "ring,ps")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    rows = json.loads((out / "prediction.json").read_text())["rows"]
    assert {(r["exchange"], r["ranks"]) for r in rows} == {
        (e, n) for e in ("ring", "ps") for n in (1, 2, 8)}
    ring8 = next(r for r in rows if r["exchange"] == "ring" and r["ranks"] == 8)
    # 4 MB of gradients, fully overlapped? backward is 67 ms, the ring 2·7/8·4 MB at 125 MB/s
    # = 56 ms plus the last part's share: some, not all, of it is exposed
    assert 0 < ring8["exposed_comm_s"] < ring8["comm_s"]
    assert (out / "prediction.csv").read_text().startswith("exchange,ranks")
    assert (out / "prediction.png").stat().st_size > 1000


@pytest.mark.parametrize("text, words", [
    (GOOD.replace("compute: {samples_per_sec: 100, batch_per_device: 10}",
                  "compute: {batch_per_device: 10}"), "compute needs samples_per_sec"),
    (GOOD.replace("bandwidth: 1Gbit/s, ", ""), "inter_host needs a bandwidth"),
    (GOOD.replace("bandwidth: 1Gbit/s", "bandwidth: fast"), "bandwidth 'fast'"),
    (GOOD.replace("dtype: float32", "dtype: float32, layers: 3"), "unknown key 'layers'"),
    (GOOD.replace("batch_per_device: 10}", "batch_per_device: 10, jitter: -0.1}"),
     "compute.jitter must be 0 or more"),
    (GOOD.replace("hosts: [1, 4]", "hosts: []"), "cluster.hosts is empty"),
])
def test_bad_description_is_one_line_exit_2(tmp_path, text, words):
    proc = predict(tmp_path, text)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("old, new, words", [
    ("hosts: [1, 4]", "hosts: [1, 2.5]", "cluster.hosts must be a whole number"),
    ("hosts: [1, 4]", "hosts: [1, four]", "cluster.hosts must be a number, got 'four'"),
    ("devices_per_host: 2", "devices_per_host: 0", "cluster.devices_per_host must be positive"),
    ("batch_per_device: 10}", "batch_per_device: 10, jitter: lots}", "compute.jitter must be a"),
    ("batch_per_device: 10}", "batch_per_device: 10, jitter: null}", "compute.jitter must be a"),
    ("batch_per_device: 10}", "batch_per_device: 10, overlap: no-thanks}",
     "compute.overlap must be true or false"),
    ("batch_per_device: 10}", "batch_per_device: 10, backward_share: 1.5}",
     "compute.backward_share must be between 0 and 1"),
    ("dtype: float32}", "dtype: float32, tensors: 5}", "model.tensors must be a list"),
    ("dtype: float32}", "dtype: float32, tensors: [10, x]}", "each of model.tensors"),
    ("dtype: float32}", "dtype: [float32]}", "model.dtype ['float32']"),
    ("parameters: 1000000", "parameters: true", "model.parameters must be a number"),
    ("latency: 50us}", "latency: -1}", "inter_host.latency must be 0 or more"),
    ("cluster:", "horovod: {fusion_mb: []}\ncluster:", "horovod.fusion_mb must be a number"),
    ("cluster:", "pipeline: {stages: 2, microbatches: 4, schedules: [1f1b, 2f2b]}\ncluster:",
     "pipeline.schedules has '2f2b'"),
    ("cluster:", "pipeline: {stages: 2, schedules: [1f1b]}\ncluster:",
     "pipeline needs microbatches"),
    ("cluster:", "pipeline: {stages: 2, microbatches: 4, schedules: []}\ncluster:",
     "pipeline.schedules is empty"),
])
def test_each_field_of_a_description_is_checked(tmp_path, old, new, words):
    from hvdkit.bench.describe import load_description
    from hvdkit.errors import UserError

    assert old in GOOD
    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(UserError, match=re.escape(words)):
        load_description(path)


def test_a_description_takes_numbers_yaml_leaves_as_strings(tmp_path):
    from hvdkit.bench.describe import load_description

    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD.replace("samples_per_sec: 100", "samples_per_sec: 1e2") +
                    "pipeline: {stages: 2, microbatches: 4, schedules: 1f1b}\n")
    described = load_description(path)
    assert described.work.forward + described.work.backward == pytest.approx(0.01)
    assert described.hosts == [1, 4]
    assert described.pipeline == {"schedules": ["1f1b"], "stages": 2, "microbatches": 4,
                                  "virtual": 2}


def test_scale_predict_needs_np_1():
    from hvdkit.bench.scale import SweepSpec
    from hvdkit.errors import UserError

    recipe = str(Path(__file__).parents[2] / "recipes" / "synthetic_mlp.yaml")
    with pytest.raises(UserError, match="add 1 to --np"):
        SweepSpec(recipe=recipe, nps=[2], predict=True).validate()
    SweepSpec(recipe=recipe, nps=[1, 2], predict=True).validate()


def test_recipe_spanning_hosts_needs_a_network(tmp_path):
    recipe = str(Path(__file__).parents[2] / "recipes" / "synthetic_mlp.yaml")
    proc = subprocess.run([sys.executable, "-m", "hvdkit", "predict", recipe, "--np", "1,16",
                           "--compute-seconds", "1e-3", "--parameters", "1000", "--intra",
                           "1GB/s,1us", "--out", str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
                          timeout=120)
    assert proc.returncode == 2 and "--network" in proc.stderr, proc.stderr
