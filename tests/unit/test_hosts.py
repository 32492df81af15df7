"""Multi-host launch settings: host lists, the peer timeout per controller, lost-host reports."""

import shlex
from pathlib import Path

import pytest

from hvdkit.errors import UserError
from hvdkit.launch import hosts
from hvdkit.launch.job import horovodrun_command
from hvdkit.launch.options import LaunchOptions


def test_host_names_from_list_and_hostfile(tmp_path: Path) -> None:
    assert hosts.host_names("a:2,b:1,a:2", None) == ["a", "b"]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\nnode1 slots=2\n\nnode2:4  # spare\n")
    assert hosts.host_names(None, str(hostfile)) == ["node1", "node2"]


def test_mpi_keepalive_adds_up_to_the_peer_timeout() -> None:
    args = hosts.mpi_keepalive_args(30)
    values = dict(zip(args[1::3], map(int, args[2::3]), strict=True))
    idle, interval, probes = (values[f"oob_tcp_keepalive_{name}"]
                              for name in ("time", "intvl", "probes"))
    assert idle + interval * probes == 30


def test_only_multi_host_mpi_jobs_get_keepalives() -> None:
    local = horovodrun_command(LaunchOptions(np=2), ["p"])
    assert "keepalive" not in " ".join(local)
    remote = horovodrun_command(LaunchOptions(np=2, hosts="a:1,b:1", peer_timeout=20), ["p"])
    mpi_args = shlex.split(remote[remote.index("--mpi-args") + 1])
    assert mpi_args[:3] == ["--mca", "mpi_yield_when_idle", "1"]
    assert "oob_tcp_keepalive_time" in mpi_args
    assert hosts.gloo_timeout_env(20) == {"HOROVOD_GLOO_TIMEOUT_SECONDS": "20"}


def test_peer_timeout_must_be_positive() -> None:
    with pytest.raises(UserError, match="--peer-timeout"):
        LaunchOptions(peer_timeout=0).validate()


def test_lost_hosts_are_named(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hosts, "probe", lambda host: "Connection timed out" if host == "b"
                        else None)
    assert hosts.report_lost_hosts(["a", "b"], peer_timeout=30) == ["b"]
    message = capsys.readouterr().err
    assert "host b is unreachable (Connection timed out)" in message
    assert "host a" not in message
