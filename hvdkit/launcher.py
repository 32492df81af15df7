"""Starting a Horovod job from outside one: the horovodrun command, with hvdkit's defaults.

Defaults here were measured on a 2-core CPU host (see README, "Launch defaults"); each one is
shown in `hvdkit info`, saved in the run's config.yaml, and can be overridden.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path

from hvdkit.errors import UserError
from hvdkit.world import cores

# Extension modules that exist only when Horovod was built with that framework.
HOROVOD_EXTENSIONS = {
    "torch": "horovod.torch.mpi_lib_v2",
    "tensorflow": "horovod.tensorflow.mpi_lib",
}
CONTROLLERS = ("mpi", "gloo")
_RANK_FAILED = re.compile(r"hvdkit: rank (\d+) failed")


@dataclass
class LaunchOptions:
    np: int = 1
    """Number of ranks."""
    controller: str = "mpi"
    """Horovod's controller: mpi, or gloo (no MPI needed)."""
    hosts: str | None = None
    """horovodrun -H list, e.g. `h1:2,h2:2`."""
    hostfile: str | None = None
    """A hostfile (`host slots=N` per line)."""
    network_interface: str | None = None
    """NIC(s) for Horovod's traffic, e.g. `eth0`."""
    yield_when_idle: bool = True
    """OpenMPI `mpi_yield_when_idle 1`: waiting ranks give their core back to compute.
    Measured here, 2 ranks, 1 thread each: scaling efficiency 0.63 → 0.95 (torch)."""
    mpi_args: list[str] = field(default_factory=list)
    """Extra arguments for mpirun."""

    def validate(self) -> None:
        if self.np < 1:
            raise UserError(f"-np must be at least 1, got {self.np}")
        if self.controller not in CONTROLLERS:
            raise UserError(f"unknown controller {self.controller!r}; valid: mpi, gloo")
        if self.hosts and self.hostfile:
            raise UserError("give --hosts or --hostfile, not both")
        if self.hostfile and not Path(self.hostfile).is_file():
            raise UserError(f"hostfile {self.hostfile} does not exist")

    @property
    def multi_host(self) -> bool:
        return bool(self.hosts or self.hostfile)

    def effective_mpi_args(self) -> list[str]:
        args = ["--mca", "mpi_yield_when_idle", "1"] if self.yield_when_idle else []
        return args + self.mpi_args

    def describe(self) -> dict:
        """What a run records in its config.yaml, the resolved mpirun arguments included."""
        return {**asdict(self), "resolved_mpi_args": self.effective_mpi_args()}


def check_horovod(framework: str, controller: str) -> None:
    """Fail early, with the fix, when Horovod or the chosen pieces of it are missing."""
    if find_spec("horovod") is None:
        raise UserError("Horovod is not installed in this Python; run `make setup`")
    if find_spec(HOROVOD_EXTENSIONS[framework]) is None:
        raise UserError(f"Horovod was built without {framework}; run `make setup` to rebuild it")
    if controller == "mpi" and shutil.which("mpirun") is None:
        raise UserError("mpirun is not on PATH (OpenMPI missing); run `make setup`, "
                        "or use --controller gloo")


def horovodrun_command(options: LaunchOptions, program: list[str]) -> list[str]:
    """The horovodrun command line that runs `program` (an argv) on every rank."""
    horovodrun = Path(sys.executable).with_name("horovodrun")
    command = [str(horovodrun) if horovodrun.exists() else "horovodrun",
               "-np", str(options.np), f"--{options.controller}"]
    if options.hosts:
        command += ["-H", options.hosts]
    if options.hostfile:
        command += ["--hostfile", options.hostfile]
    if options.network_interface:
        command += ["--network-interface", options.network_interface]
    mpi_args = options.effective_mpi_args()
    if options.controller == "mpi" and mpi_args:
        command += ["--mpi-args", shlex.join(mpi_args)]
    return [*command, *program]


def warn_oversubscription(options: LaunchOptions) -> None:
    if not options.multi_host and options.np > cores():
        print(f"hvdkit: warning: -np {options.np} is more than the {cores()} cores here; "
              "ranks will share cores and run slower", file=sys.stderr)


def run_job(options: LaunchOptions, program: list[str]) -> int:
    """Run `program` on every rank, streaming the output; on failure, name the failed rank(s)."""
    command = horovodrun_command(options, program)
    print("[hvdkit] launching:", shlex.join(command), file=sys.stderr, flush=True)
    # TensorFlow's C++ info lines (oneDNN, CPU features) repeat on every rank; keep warnings.
    env = {"TF_CPP_MIN_LOG_LEVEL": "1", **os.environ,
           "HVDKIT_LAUNCH": json.dumps(options.describe())}
    failed: set[int] = set()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          text=True, bufsize=1) as job:
        assert job.stdout is not None
        for line in job.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            match = _RANK_FAILED.search(line)
            if match:
                failed.add(int(match.group(1)))
        code = job.wait()
    if code != 0:
        who = f"rank {', '.join(map(str, sorted(failed)))}" if failed else "a worker"
        print(f"hvdkit: the job failed (exit code {code}): {who} failed; "
              "its traceback is above", file=sys.stderr)
    return code
