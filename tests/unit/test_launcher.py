"""The commands hvdkit launches with (mpirun on one host, horovodrun otherwise), its measured
defaults, the user's mpirun arguments, launch-option errors, and a launch that imports no
framework."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.errors import UserError
from hvdkit.launch.job import horovodrun_command, job_command
from hvdkit.launch.mpi_args import parse_mpi_args
from hvdkit.launch.options import LaunchOptions

ROOT = Path(__file__).resolve().parents[2]


def test_mpi_command_carries_yield_when_idle() -> None:
    command = horovodrun_command(LaunchOptions(np=2), ["python", "x.py"])
    assert command[1:6] == ["-m", "hvdkit.launch.horovodrun", "-np", "2", "--mpi"]
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
    import hvdkit.launch.job as launcher

    assert launcher.extension_built("torch") and launcher.extension_built("tensorflow")
    monkeypatch.setattr(launcher, "extension_built", lambda framework: framework != "torch")
    with pytest.raises(UserError, match=r"built without torch; run `make setup`"):
        launcher.check_horovod("torch", "mpi")
    monkeypatch.setattr(launcher, "horovod_installed", lambda: False)
    with pytest.raises(UserError, match=r"Horovod is not installed.*make setup"):
        launcher.check_horovod("tensorflow", "gloo")


def test_more_ranks_than_cores_warns_once(capsys, monkeypatch) -> None:
    import os

    from hvdkit.launch.job import warn_oversubscription
    from hvdkit.runtime.world import OVERSUBSCRIBED_WARNED, cores, warn_oversubscribed_host

    monkeypatch.setenv(OVERSUBSCRIBED_WARNED, "0")
    host = os.cpu_count() or 1
    warn_oversubscribed_host(1, host + 1)  # not the host's first rank
    warn_oversubscribed_host(0, host)
    assert capsys.readouterr().err == ""
    warn_oversubscribed_host(0, host + 1)  # a rank of a job no launcher of ours checked
    assert capsys.readouterr().err.startswith(f"hvdkit: warning: {host + 1} ranks on host ")
    warn_oversubscribed_host(0, host + 1)  # once a process
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(OVERSUBSCRIBED_WARNED, "0")

    warn_oversubscription(LaunchOptions(np=cores() + 1))
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"hvdkit: warning: {cores() + 1} ranks on this host's {cores()} cores: "
                    "they take turns on the cores and every step waits for the slowest; launch "
                    f"at most {cores()} ranks per host (-np), or spread them over hosts (--hosts)")
    warn_oversubscribed_host(0, host + 1)  # its ranks: told, and quiet
    warn_oversubscription(LaunchOptions(np=cores() + 1, hosts="a:8,b:8"))  # their own check
    warn_oversubscription(LaunchOptions(np=1))
    assert capsys.readouterr().err == ""


def test_one_host_mpi_jobs_run_mpirun_itself() -> None:
    command = job_command(LaunchOptions(np=2), ["python", "x.py"])
    assert command[:2] == ["mpirun", "--allow-run-as-root"]
    assert command[command.index("-H") + 1] == "localhost:2"
    assert mca(command) == {"pml": "ob1", "btl": "^openib,ofi", "btl_tcp_if_include": "lo",
                            "mpi_yield_when_idle": "1"}
    assert command[-2:] == ["python", "x.py"]
    stalls = job_command(LaunchOptions(np=2, stall_warning_seconds=5, stall_check=True), ["p"])
    assert "HOROVOD_STALL_CHECK_TIME_SECONDS=5" in stalls
    for options in (LaunchOptions(np=2, controller="gloo"), LaunchOptions(np=2, hosts="a:1,b:1"),
                    LaunchOptions(np=2, elastic=True, host_discovery_script="d.sh")):
        assert job_command(options, ["p"])[1:3] == ["-m", "hvdkit.launch.horovodrun"]


def test_user_mpi_args_take_any_string_and_replace_ours() -> None:
    options = LaunchOptions(np=2, mpi_args=parse_mpi_args(
        "--report-bindings --mca btl_tcp_if_include eth0 --mca mpi_yield_when_idle 0 "
        "--bind-to core"))
    command = job_command(options, ["p"])
    assert mca(command) == {"pml": "ob1", "btl": "^openib,ofi", "btl_tcp_if_include": "eth0",
                            "mpi_yield_when_idle": "0"}
    assert "--report-bindings" in command
    assert command.count("--bind-to") == 1 and command[command.index("--bind-to") + 1] == "core"
    # horovodrun sets the interface itself: the user's value becomes its --network-interface
    remote = horovodrun_command(LaunchOptions(np=2, hosts="a:1,b:1", mpi_args=parse_mpi_args(
        "--mca btl_tcp_if_include eth0")), ["p"])
    assert remote[remote.index("--network-interface") + 1] == "eth0"
    assert "btl_tcp_if_include" not in remote[remote.index("--mpi-args") + 1]
    with pytest.raises(UserError, match="horovodrun sets btl itself"):
        horovodrun_command(LaunchOptions(np=2, hosts="a:1,b:1", mpi_args=["--mca", "btl", "tcp"]),
                           ["p"])
    with pytest.raises(UserError, match="--mpi-args"):
        parse_mpi_args("'unclosed")


def test_mpi_args_flag_takes_a_value_that_starts_with_dashes() -> None:
    from hvdkit.cli import parse_args

    args = parse_args(["train", "r.yaml", "--mpi-args", "--report-bindings", "-np", "2"])
    assert args.mpi_args == "--report-bindings" and args.np == 2


def test_version_flag(capsys) -> None:
    from hvdkit import __version__
    from hvdkit.cli import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["--version"])
    out = capsys.readouterr().out.strip()
    assert stop.value.code == 0 and out.startswith(f"hvdkit {__version__} (")  # + checkout


LAUNCH_WITHOUT_RUNNING = """
import json, sys
import hvdkit.cli as cli
import hvdkit.launch.train as train
seen = []
train.run_job = lambda options, program, verbose=False, env=None: seen.append(program) or 0
for framework in ("torch", "tensorflow"):
    for controller in ("mpi", "gloo"):
        assert cli.main(["train", "recipes/digits_mlp.yaml", "-f", framework, "-np", "2",
                         "--controller", controller, "--run-dir", sys.argv[1]]) == 0
assert all(program[1:3] == ["-m", "hvdkit.worker"] for program in seen), seen
print(json.dumps([name for name in ("torch", "tensorflow", "keras", "horovod.torch",
                 "horovod.tensorflow", "horovod", "mpi4py") if name in sys.modules]))
"""


def test_launching_a_job_imports_no_framework(tmp_path) -> None:
    """The launch path of `hvdkit train -np 2`, both frameworks and controllers, up to the
    point where it would start the job: no framework, Horovod or mpi4py module loaded."""
    env = {**os.environ, "HVDKIT_NO_MACHINE_DEFAULTS": "1"}
    done = subprocess.run([sys.executable, "-c", LAUNCH_WITHOUT_RUNNING, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def mca(command: list[str]) -> dict[str, str]:
    return {command[i + 1]: command[i + 2] for i, word in enumerate(command) if word == "--mca"}


@pytest.mark.parametrize("argv, message", [
    (["--launcher", "ray", "--controller", "mpi"], "runs Horovod on Gloo"),
    (["--launcher", "ray", "-H", "a:1,b:1"], "takes its hosts from the Ray cluster"),
    (["--ray-address", "auto"], "--ray-address needs --launcher ray"),
])
def test_ray_launcher_flag_errors(argv: list[str], message: str, capsys) -> None:
    from hvdkit.cli import main

    assert main(["train", "recipes/digits_mlp.yaml", "-np", "2", *argv]) == 2
    assert message in capsys.readouterr().err


def test_new_run_folders_never_collide(tmp_path) -> None:
    """Folders made in the same second get -2, -3: each call makes its own (mkdir is atomic)."""
    from hvdkit.training.rundir import new_run_dir

    made = [new_run_dir("r", "torch", 2, root=tmp_path) for _ in range(3)]
    assert len(set(made)) == 3 and all(p.is_dir() for p in made)
    stamps = {p.name.split("-np2-")[1][:15] for p in made}
    if len(stamps) == 1:  # all in one second: the suffixes tell them apart
        assert [p.name[-2:] for p in made[1:]] == ["-2", "-3"]


def test_worker_entry_reads_the_saved_job_and_refuses_without_one(tmp_path) -> None:
    """`python -m hvdkit.worker RUN_DIR`: the launcher's TrainJob round-trips through the run
    folder and the environment; without one, one line and exit 2."""
    from hvdkit.recipe import load_recipe
    from hvdkit.worker import JOB_ENV, TrainJob, read_job

    recipe = load_recipe(ROOT / "recipes/digits_mlp.yaml", ["train.epochs=3"])
    job = TrainJob(recipe=recipe.to_dict(), framework="torch", recipe_folder=recipe.folder,
                   run_dir=str(tmp_path), resume="latest")
    job.save(tmp_path)
    assert read_job(str(tmp_path)) == job
    assert job.load_recipe().train.epochs == 3 and job.load_recipe().folder == recipe.folder
    env = {**os.environ, JOB_ENV: job.encoded()}
    probe = ("import os, sys; from hvdkit.worker import read_job; "
             "print(read_job('/nonexistent').framework)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "torch", out.stderr
    empty = subprocess.run([sys.executable, "-m", "hvdkit.worker", str(tmp_path / "none")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != JOB_ENV})
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1, empty.stderr


def test_done_line_gives_accuracy_or_perplexity() -> None:
    from hvdkit.worker import done_line

    base = {"np": 2, "samples_per_sec": 1000.0, "run_dir": "runs/x"}
    assert "test accuracy 0.9000" in done_line("torch", {**base, "test_accuracy": 0.9})
    assert "test perplexity 13.90" in done_line("torch", {**base, "test_perplexity": 13.9})
    assert "no evaluation" in done_line("torch", base)
