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
from pathlib import Path

from hvdkit.console import Console
from hvdkit.errors import UserError
from hvdkit.failures import Printed, failure_lines, host_lines
from hvdkit.horovodrun import extension_built, horovod_installed
from hvdkit.hosts import gloo_timeout_env, mpi_keepalive_args, rank_hosts
from hvdkit.interrupts import JobGuard
from hvdkit.jobdir import JobDir
from hvdkit.mpirun import for_horovodrun, merge_mpi_args, mpirun_command, uses_mpirun
from hvdkit.watchdog import Monitor
from hvdkit.world import cores

CONTROLLERS = ("mpi", "gloo")
_RANK_FAILED = re.compile(r"hvdkit: rank (\d+) failed")
# A rank killed by a signal prints nothing itself; its launcher names it.
_RANK_ERROR = re.compile(r"hvdkit: error \(rank (\d+)\)")
_RANK_STOPPED = re.compile(r"hvdkit: rank (\d+) stopped")  # only because another failed
_RANK_LOST = re.compile(r"failure of Process (\d+)\.|"  # horovodrun --gloo
                        r"process rank (\d+) with PID \d+ on node \S+ exited on signal")  # mpirun


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
    """What `hvdkit tune`'s saved defaults filled in (hvdkit.defaults), recorded in config.yaml."""
    peer_timeout: int = 30
    """Multi-host: seconds ranks wait for a silent host before the job fails (Gloo's timeout;
    mpirun's keepalive to each host's daemon). See hvdkit.hosts."""

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


def check_horovod(framework: str, controller: str) -> None:
    """Fail early, with the fix, when Horovod or the chosen pieces of it are missing."""
    if not horovod_installed():
        raise UserError("Horovod is not installed in this Python; run `make setup`")
    if not extension_built(framework):  # a file check: no framework is imported here
        raise UserError(f"Horovod was built without {framework}; run `make setup` to rebuild it")
    if controller == "mpi" and shutil.which("mpirun") is None:
        raise UserError("mpirun is not on PATH (OpenMPI missing); run `make setup`, "
                        "or use --controller gloo")


def horovodrun_command(options: LaunchOptions, program: list[str]) -> list[str]:
    """The horovodrun command line that runs `program` (an argv) on every rank."""
    controller = options.launch_controller
    # horovodrun's own command line, with its build probe kept off TensorFlow.
    command = [sys.executable, "-m", "hvdkit.horovodrun", "-np", str(options.np),
               f"--{controller}"]
    mpi_args, nic = for_horovodrun(options) if controller == "mpi" else ([], None)
    if options.elastic:
        command += ["--min-np", str(options.min_np or 1), "--max-np",
                    str(options.max_np or options.np), "--host-discovery-script",
                    str(Path(str(options.host_discovery_script)).resolve())]
    command += stall_arguments(options)
    if options.hosts:
        command += ["-H", options.hosts]
    if options.hostfile:
        command += ["--hostfile", options.hostfile]
    nic = nic or options.network_interface
    if nic:
        command += ["--network-interface", nic]
    if mpi_args:
        command += ["--mpi-args", shlex.join(mpi_args)]
    return [*command, *program]


def job_command(options: LaunchOptions, program: list[str]) -> list[str]:
    """The command that runs `program` on every rank: mpirun itself for a one-host MPI job
    (seconds faster, see hvdkit.mpirun), else horovodrun."""
    if uses_mpirun(options):
        return mpirun_command(options, program)
    return horovodrun_command(options, program)


def stall_arguments(options: LaunchOptions) -> list[str]:
    """horovodrun's stall-inspector flags for the options that differ from Horovod's defaults."""
    if not options.stall_check:
        return ["--no-stall-check"]
    args = []
    if options.stall_warning_seconds is not None:
        args += ["--stall-check-warning-time-seconds", str(options.stall_warning_seconds)]
    if options.stall_shutdown_seconds is not None:
        args += ["--stall-check-shutdown-time-seconds", str(options.stall_shutdown_seconds)]
    return args


def warn_oversubscription(options: LaunchOptions) -> None:
    if not options.multi_host and options.np > cores():
        print(f"hvdkit: warning: -np {options.np} is more than the {cores()} cores here; "
              "ranks will share cores and run slower", file=sys.stderr)


def run_job(options: LaunchOptions, program: list[str], verbose: bool = False) -> int:
    """Run `program` on every rank, relaying the output (hvdkit.console: rank 0's lines clean,
    other ranks' warnings and errors prefixed, start-up noise out; `verbose`: all of it raw);
    on failure, name the rank that failed first (hvdkit.failures).

    SIGINT/SIGTERM stop the whole job (hvdkit.interrupts); the ranks' heartbeats let the
    watchdog name a frozen rank and end the job (hvdkit.watchdog)."""
    command = job_command(options, program)
    console = Console(verbose=verbose)
    print("[hvdkit] launching:", shlex.join(command), file=sys.stderr, flush=True)
    # TensorFlow's C++ info lines (oneDNN, CPU features) repeat on every rank; keep warnings.
    peer_env = gloo_timeout_env(options.peer_timeout) if options.multi_host else {}
    job_dir = JobDir.create()
    guard = JobGuard(job_dir)
    monitor = Monitor(job_dir, *watchdog_seconds(options), end_job=guard.end)
    env = {"TF_CPP_MIN_LOG_LEVEL": "1", **peer_env, **os.environ,
           "HVDKIT_LAUNCH": json.dumps(options.describe()), **job_dir.env()}
    printed = Printed()
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, text=True, bufsize=1, start_new_session=True) as job:
            guard.attach(job, monitor.pids)
            monitor.start()
            assert job.stdout is not None
            for line in job.stdout:
                console.feed(line)
                note_line(line, printed)
            code = job.wait()
        console.close()
    finally:
        monitor.stop()
        guard.close(monitor.shm)
        stopped = job_dir.stopped()  # where rank 0 stopped, after SIGINT/SIGTERM
        job_dir.remove()
    if guard.signum:
        return guard.report(code, stopped, sys.argv[1:])
    if monitor.silenced:  # the watchdog ended it: a failure, whatever horovodrun returned
        code = 1
    elif code < 0:  # horovodrun itself was killed by a signal
        code = 128 - code
    if code != 0:
        for message in failure_lines(code, monitor, printed):
            print(message, file=sys.stderr, flush=True)
        if options.multi_host:
            host_lines(rank_hosts(options.hosts, options.hostfile, options.np), monitor,
                       options.peer_timeout)
    return code


def note_line(line: str, printed: Printed) -> None:
    """Note what one output line says about a rank (for the failure message)."""
    for pattern, ranks in ((_RANK_FAILED, printed.tracebacks), (_RANK_ERROR, printed.errors),
                           (_RANK_STOPPED, printed.followers), (_RANK_LOST, printed.lost)):
        match = pattern.search(line)
        if match:
            ranks.add(int(next(g for g in match.groups() if g is not None)))


def watchdog_seconds(options: LaunchOptions) -> tuple[float | None, float | None]:
    """The watchdog's warning and shutdown times: the stall inspector's, which it backs up."""
    if not options.stall_check:
        return 0, 0
    return options.stall_warning_seconds, options.stall_shutdown_seconds
