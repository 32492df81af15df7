"""hvdkit train across two hosts: network namespaces ns1 and ns2, reached over ssh (netns.py).

A 2-host job (one rank per host, traffic over the veth links) ends with exactly the numbers of
the single-host 2-rank run (plain mpirun): `hvdkit train` through launch/multinode.sh under
Gloo (`-H ns1:1,ns2:1`) and under MPI (`--hostfile`), and plain mpirun (launch/mpirun.sh).
A host cut off mid-run ends the job within a bounded time, with a message naming the host.
Needs root (namespaces) and openssh-server (`make setup` installs it); skips without root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netns import TwoHosts, two_hosts, unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "recipes/digits_mlp.yaml"
TRAIN = [sys.executable, "-m", "hvdkit", "train", RECIPE, "-f", "torch", "-np", "2"]
OPTIONS = ["--threads", "1", "--no-progress", "--set", "train.epochs=3"]
HOSTS = ["-H", "ns1:1,ns2:1"]
COMPARED = ("steps", "train_loss", "test_loss", "test_accuracy")
PEER_TIMEOUT = 20

pytestmark = pytest.mark.integration


@pytest.fixture
def net() -> Iterator[TwoHosts]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    with two_hosts() as hosts:
        yield hosts


def launch(script: str, run_dir: Path, env: dict[str, str] | None = None,
           **settings: str) -> str:
    """Run launch/<script> on the digits recipe (3 epochs); return its output."""
    done = subprocess.run(["bash", f"launch/{script}", RECIPE, *OPTIONS, "--run-dir",
                           str(run_dir)], cwd=ROOT, env={**(env or os.environ), **settings},
                          capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The single-host 2-rank run (3 epochs) that the 2-host runs must equal."""
    run_dir = tmp_path_factory.mktemp("one-host")
    launch("mpirun.sh", run_dir, NP="2")  # the quickest start; horovodrun's runs match it
    return summary(run_dir)


def assert_equal_runs(net: TwoHosts, run_dir: Path, one_host: dict) -> None:
    for host in ("ns1", "ns2"):  # each host's own sshd started a rank (or mpirun's daemon)
        assert "Accepted publickey for root" in net.sshd_log(host), net.sshd_log(host)
    two_hosts = summary(run_dir)
    assert two_hosts["np"] == 2
    assert {key: two_hosts[key] for key in COMPARED} == {key: one_host[key] for key in COMPARED}


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_two_hosts_equal_one_host(net: TwoHosts, one_host: dict, controller: str,
                                  tmp_path: Path) -> None:
    if controller == "gloo":  # -H list
        where, shown = {"HOSTS": "ns1:1,ns2:1"}, "-H ns1:1,ns2:1"
    else:  # hostfile
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("ns1 slots=1\nns2 slots=1\n")
        where, shown = {"HOSTFILE": str(hostfile)}, f"--hostfile {hostfile}"
    output = launch("multinode.sh", tmp_path / "run", net.env, NIC=net.interface,
                    CONTROLLER=controller, **where)
    assert f"train {RECIPE} -f torch -np 2 {shown} --network-interface" in output
    assert_equal_runs(net, tmp_path / "run", one_host)


def test_plain_mpirun_on_two_hosts_equals_one_host(net: TwoHosts, one_host: dict,
                                                   tmp_path: Path) -> None:
    output = launch("mpirun.sh", tmp_path, net.env, HOSTS="ns1:1,ns2:1", NIC=net.interface)
    assert "[launch] mpirun --np 2 -H ns1:1,ns2:1" in output
    assert_equal_runs(net, tmp_path, one_host)


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_host_cut_off_mid_run_fails_fast(net: TwoHosts, controller: str, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    command = [*TRAIN, *HOSTS, "--controller", controller, "--network-interface", net.interface,
               "--threads", "1", "--no-progress", "--peer-timeout", str(PEER_TIMEOUT),
               "--set", "train.epochs=5000", "--run-dir", str(tmp_path / "run")]
    with log.open("w") as out:
        job = subprocess.Popen(command, cwd=ROOT, env=net.env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not (tmp_path / "run" / "metrics.jsonl").exists():  # training has begun
                assert job.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "training did not start"
                time.sleep(0.5)
            net.cut("ns2")
            cut = time.monotonic()
            code = job.wait(timeout=PEER_TIMEOUT + 120)
            seconds = time.monotonic() - cut
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    output = log.read_text()
    print(f"{controller}: the job ended {seconds:.1f}s after ns2 was cut off (exit {code})")
    assert code != 0
    assert "hvdkit: host ns2 is unreachable" in output, output[-3000:]
    assert "host ns1 is unreachable" not in output
    # Bounded: the peer timeout, the shutdown and the ssh probe, with room for a busy machine.
    assert seconds < PEER_TIMEOUT + 60, output[-3000:]
