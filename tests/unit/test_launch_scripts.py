"""The launch/ scripts print the exact command they run (DRY_RUN=1: print only, no job)."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
RECIPE = "recipes/digits_mlp.yaml"


def dry_run(script: str, *args: str, **env: str) -> list[str]:
    """The command `script` would run, as an argv."""
    done = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "HVDKIT": "hvdkit", **env},
                          timeout=30)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("[launch] ")
    return shlex.split(line.removeprefix("[launch] "))


def test_local() -> None:
    assert dry_run("local.sh", RECIPE, "--set", "train.epochs=2", NP="2", CONTROLLER="gloo") == [
        "hvdkit", "train", RECIPE, "-f", "torch", "-np", "2", "--controller", "gloo",
        "--set", "train.epochs=2"]


def test_multinode_counts_slots_of_a_host_list_or_hostfile(tmp_path: Path) -> None:
    command = dry_run("multinode.sh", RECIPE, HOSTS="a:2,b", NIC="eth1")
    assert command[command.index("-np") + 1] == "3"
    assert command[command.index("-H") + 1] == "a:2,b"
    assert command[command.index("--network-interface") + 1] == "eth1"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# nodes\nn1 slots=4\nn2 slots=4\n")
    command = dry_run("multinode.sh", RECIPE, "-f", "tensorflow", HOSTFILE=str(hostfile),
                      CONTROLLER="gloo", PEER_TIMEOUT="20")
    assert command[command.index("-np") + 1] == "8"
    assert command[command.index("--hostfile") + 1] == str(hostfile)
    assert command[-2:] == ["-f", "tensorflow"]  # the caller's options come last and win
    assert command[command.index("--peer-timeout") + 1] == "20"


def test_mpirun_binds_cores_and_exports_the_environment() -> None:
    command = dry_run("mpirun.sh", RECIPE, NP="2", CORES="8", HOROVOD_FUSION_THRESHOLD="0")
    assert command[0] == "mpirun"
    assert command[command.index("--map-by") + 1] == "slot:PE=4"
    assert command[command.index("--threads") + 1] == "4"
    exported = {command[i + 1] for i, word in enumerate(command) if word == "-x"}
    assert {"PATH", "HOROVOD_FUSION_THRESHOLD"} <= exported
    remote = dry_run("mpirun.sh", RECIPE, HOSTS="a:2,b:2", NIC="eth1", CORES="4")
    assert remote[remote.index("--np") + 1] == "4"
    assert "oob_tcp_keepalive_time" in remote and "btl_tcp_if_include" in remote
    assert remote[remote.index("--threads") + 1] == "2"


def test_slurm_uses_srun_and_the_tasks_cores() -> None:
    command = dry_run("slurm.sbatch", RECIPE, SLURM_CPUS_PER_TASK="6", SLURM_JOB_ID="42",
                      SLURM_SUBMIT_DIR=str(LAUNCH.parent))
    assert command[:2] == ["srun", "--mpi=pmix"]
    assert command[command.index("--threads") + 1] == "6"
    assert command[command.index("--run-dir") + 1] == "runs/slurm-42"


def test_slurm_repeats_no_flag_the_user_gave() -> None:
    command = dry_run("slurm.sbatch", RECIPE, "-f", "tensorflow", "--run-dir", "mine",
                      "--threads=3", SLURM_CPUS_PER_TASK="6", SLURM_SUBMIT_DIR=str(LAUNCH.parent))
    words = " ".join(command)
    assert command[-5:] == ["-f", "tensorflow", "--run-dir", "mine", "--threads=3"]
    assert words.count("-f ") == 1 and words.count("--run-dir") == 1 and "--threads " not in words


@pytest.mark.parametrize("script", ["local.sh", "multinode.sh", "mpirun.sh", "slurm.sbatch"])
def test_without_a_recipe_the_usage_is_shown(script: str) -> None:
    done = subprocess.run(["bash", str(LAUNCH / script)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "launch/" in done.stderr


def link(tmp_path: Path, checkout: str, **env: str) -> str:
    """launch/link.sh (setup.sh's step 7) for `checkout`'s hvdkit, with tmp_path/bin the
    folder on PATH it links in; its one line."""
    target = tmp_path / checkout / ".venv/bin/hvdkit"
    done = subprocess.run(["bash", str(LAUNCH / "link.sh"), str(target)], capture_output=True,
                          text=True, timeout=30,
                          env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                               "HVDKIT_LINK_DIRS": str(tmp_path / "bin"), **env})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    (line,) = done.stdout.splitlines()
    return line


def test_setup_leaves_another_checkouts_link_alone(tmp_path: Path) -> None:
    for checkout in ("a", "b"):
        (tmp_path / checkout / ".venv/bin").mkdir(parents=True)
        (tmp_path / checkout / ".venv/bin/hvdkit").touch()
    (tmp_path / "bin").mkdir()
    on_path = tmp_path / "bin/hvdkit"
    mine, theirs = (str(tmp_path / c / ".venv/bin/hvdkit") for c in ("a", "b"))

    assert link(tmp_path, "a") == f"[setup] ready: hvdkit on PATH ({on_path} -> {mine})"
    assert os.readlink(on_path) == mine
    # Set up in checkout b: a's link stays, and the line says whose it is and how to move it.
    assert link(tmp_path, "b") == (
        f"[setup] left {on_path} -> {mine} as it is (another checkout's, {tmp_path / 'a'}); "
        f"to point it here: HVDKIT_LINK=force make setup, or ln -sfn {theirs} {on_path}")
    assert os.readlink(on_path) == mine
    assert link(tmp_path, "a").startswith("[setup] ready: hvdkit on PATH")  # its own: as is
    assert "ready: hvdkit on PATH" in link(tmp_path, "b", HVDKIT_LINK="force")
    assert os.readlink(on_path) == theirs
    # A link whose checkout is gone is taken over; a file that is no link is not.
    on_path.unlink()
    on_path.symlink_to(tmp_path / "gone/.venv/bin/hvdkit")
    link(tmp_path, "a")
    assert os.readlink(on_path) == mine
    on_path.unlink()
    on_path.write_text("#!/bin/sh\n")
    assert "put it on PATH" in link(tmp_path, "a") and not on_path.is_symlink()
