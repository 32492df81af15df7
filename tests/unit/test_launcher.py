"""The horovodrun command hvdkit builds, with its measured defaults, and launch-option errors."""

import shlex

import pytest

from hvdkit.errors import UserError
from hvdkit.launcher import LaunchOptions, horovodrun_command


def test_mpi_command_carries_yield_when_idle() -> None:
    command = horovodrun_command(LaunchOptions(np=2), ["python", "x.py"])
    assert command[1:4] == ["-np", "2", "--mpi"]
    assert shlex.split(command[command.index("--mpi-args") + 1]) == \
        ["--mca", "mpi_yield_when_idle", "1"]
    assert command[-2:] == ["python", "x.py"]


def test_yield_can_be_turned_off_and_gloo_has_no_mpi_args() -> None:
    assert "--mpi-args" not in horovodrun_command(
        LaunchOptions(np=2, yield_when_idle=False), ["p"])
    gloo = horovodrun_command(LaunchOptions(np=2, controller="gloo"), ["p"])
    assert "--gloo" in gloo and "--mpi-args" not in gloo


def test_hosts_and_interface_are_passed() -> None:
    command = horovodrun_command(
        LaunchOptions(np=2, hosts="a:1,b:1", network_interface="eth1"), ["p"])
    assert command[command.index("-H") + 1] == "a:1,b:1"
    assert command[command.index("--network-interface") + 1] == "eth1"


@pytest.mark.parametrize("options, message", [
    (LaunchOptions(np=0), "-np must be at least 1"),
    (LaunchOptions(controller="nccl"), "unknown controller 'nccl'"),
    (LaunchOptions(hosts="a:1", hostfile="f"), "not both"),
    (LaunchOptions(hostfile="/nonexistent"), "does not exist"),
])
def test_bad_options(options: LaunchOptions, message: str) -> None:
    with pytest.raises(UserError, match=message):
        options.validate()


def test_horovod_built_without_framework_points_at_setup(monkeypatch) -> None:
    import hvdkit.launcher as launcher

    real = launcher.find_spec
    monkeypatch.setattr(launcher, "find_spec",
                        lambda name: None if name == "horovod.torch.mpi_lib_v2" else real(name))
    with pytest.raises(UserError, match=r"built without torch; run `make setup`"):
        launcher.check_horovod("torch", "mpi")
    monkeypatch.setattr(launcher, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"Horovod is not installed.*make setup"):
        launcher.check_horovod("tensorflow", "gloo")


def test_more_ranks_than_cores_warns(capsys) -> None:
    from hvdkit.launcher import warn_oversubscription
    from hvdkit.world import cores

    warn_oversubscription(LaunchOptions(np=cores() + 1))
    assert "more than the" in capsys.readouterr().err
    warn_oversubscription(LaunchOptions(np=1))
    assert capsys.readouterr().err == ""
