"""How a job is launched: ranks, controller, hosts, elastic sizes, stall checks, mpirun
arguments; checked once, recorded in the run's config.yaml.

Defaults here were measured on a 2-core CPU host (see README, "Launch defaults"); each one is
shown in `hvdkit info` and can be overridden.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvdkit.errors import UserError
from hvdkit.launch.hosts import mpi_keepalive_args
from hvdkit.launch.mpi_args import merge_mpi_args

CONTROLLERS = ("mpi", "gloo")


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
    """OpenMPI `mpi_yield_when_idle 1`: waiting ranks give their core back to compute instead
    of busy-polling it (README, "Launch defaults", has the measured effect)."""
    mpi_args: list[str] = field(default_factory=list)
    """Extra arguments for mpirun."""
    elastic: bool = False
    """Horovod elastic: workers come from `host_discovery_script`; Gloo is the controller."""
    min_np: int | None = None
    """Elastic: fewest workers to keep training with."""
    max_np: int | None = None
    """Elastic: most workers to take in."""
    host_discovery_script: str | None = None
    """Elastic: an executable that prints the available `host:slots`, one per line."""
    stall_check: bool = True
    """Horovod's stall inspector: report ranks that have not joined a collective."""
    stall_warning_seconds: int | None = None
    """Seconds a collective may wait before the stall warning names the missing ranks
    (Horovod's default: 60)."""
    stall_shutdown_seconds: int | None = None
    """Seconds after which a stalled job is shut down (Horovod's default 0: never)."""
    machine_defaults: dict | None = None
    """What `hvdkit tune`'s saved defaults filled in (hvdkit.launch.defaults), recorded in
    config.yaml."""
    peer_timeout: int = 30
    """Multi-host: seconds ranks wait for a silent host before the job fails (Gloo's timeout;
    mpirun's keepalive to each host's daemon). See hvdkit.launch.hosts."""

    def validate(self) -> None:
        if self.np < 1:
            raise UserError(f"-np must be at least 1, got {self.np}")
        if self.peer_timeout < 2:
            raise UserError(f"--peer-timeout must be at least 2 seconds, got {self.peer_timeout}")
        if self.controller not in CONTROLLERS:
            raise UserError(f"unknown controller {self.controller!r}; valid: mpi, gloo")
        if self.hosts and self.hostfile:
            raise UserError("give --hosts or --hostfile, not both")
        if self.hostfile and not Path(self.hostfile).is_file():
            raise UserError(f"hostfile {self.hostfile} does not exist")
        if self.elastic:
            script = self.host_discovery_script
            if not script:
                raise UserError("--elastic needs --host-discovery-script")
            if not (Path(script).is_file() and os.access(script, os.X_OK)):
                raise UserError(f"host discovery script {script} is not an executable file")
            if self.hosts or self.hostfile:
                raise UserError("--elastic takes its hosts from --host-discovery-script, "
                                "not --hosts or --hostfile")
            low, high = self.min_np or 1, self.max_np or self.np
            if not 1 <= low <= self.np <= high:
                raise UserError(f"elastic sizes must satisfy 1 <= --min-np ({low}) <= -np "
                                f"({self.np}) <= --max-np ({high})")
        elif self.host_discovery_script or self.min_np or self.max_np:
            raise UserError("--host-discovery-script, --min-np and --max-np need --elastic")
        warn, stop = self.stall_warning_seconds, self.stall_shutdown_seconds
        if stop and warn and stop <= warn:
            raise UserError("--stall-shutdown-seconds must be larger than "
                            "--stall-warning-seconds")

    @property
    def launch_controller(self) -> str:
        """The controller horovodrun gets: elastic jobs always run on Gloo."""
        return "gloo" if self.elastic else self.controller

    @property
    def multi_host(self) -> bool:
        return bool(self.hosts or self.hostfile)

    def effective_mpi_args(self) -> list[str]:
        args = ["--mca", "mpi_yield_when_idle", "1"] if self.yield_when_idle else []
        if self.multi_host:  # a host cut off mid-run ends the job instead of hanging it
            args += mpi_keepalive_args(self.peer_timeout)
        return merge_mpi_args(args, self.mpi_args)  # the user's values replace ours

    def describe(self) -> dict:
        """What a run records in its config.yaml, the resolved mpirun arguments included."""
        return {**asdict(self), "resolved_mpi_args": self.effective_mpi_args()}
