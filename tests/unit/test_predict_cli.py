"""`hvdkit predict` on a described cluster: its files, and one line and exit 2 for a
description that cannot give a number."""

import json
import os
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
])
def test_bad_description_is_one_line_exit_2(tmp_path, text, words):
    proc = predict(tmp_path, text)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


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
