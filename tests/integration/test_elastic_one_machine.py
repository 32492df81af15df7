"""Elastic training on one machine as the README shows it: a hosts file naming this machine
twice gives each rank cores ÷ 2 threads (not every core), a hosts file naming it once starts
without --network-interface, and the progress line never passes 100%."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hvdkit.runtime.world import cores
from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("hosts", ["localhost:1\n127.0.0.1:1\n", "localhost:2\n"],
                         ids=["two-names", "one-host"])
def test_elastic_job_on_this_machine(tmp_path: Path, hosts: str) -> None:
    (tmp_path / "hosts.txt").write_text(hosts)
    env = {**os.environ, "HVDKIT_HOSTS_FILE": str(tmp_path / "hosts.txt"),
           "HVDKIT_NO_MACHINE_DEFAULTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hvdkit", "train", "recipes/digits_mlp.yaml", "-np", "2",
         "--elastic", "--host-discovery-script", "launch/discover_hosts.sh",
         "--set", "train.epochs=1", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["threads_per_rank"] == max(1, cores() // 2)
    percents = [int(p) for p in re.findall(r"step \d+/\d+ \((\d+)%\)", result.stderr)]
    assert percents and max(percents) == 100
