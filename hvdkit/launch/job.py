"""Running a Horovod job from outside one: its command (mpirun on one host, else horovodrun),
its console, its stop guard and watchdog, and the failure report when it ends badly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hvdkit.errors import UserError
from hvdkit.launch.console import Console
from hvdkit.launch.failures import Printed, failure_lines, host_lines
from hvdkit.launch.guard import JobGuard
from hvdkit.launch.horovodrun import extension_built, horovod_installed
from hvdkit.launch.hosts import gloo_timeout_env, rank_hosts
from hvdkit.launch.monitor import Monitor
from hvdkit.launch.mpirun import for_horovodrun, mpirun_command, uses_mpirun
from hvdkit.launch.options import LaunchOptions
from hvdkit.runtime.jobdir import JobDir
from hvdkit.runtime.world import OVERSUBSCRIBED_WARNED, cores, oversubscribed_warning

_RANK_FAILED = re.compile(r"hvdkit: rank (\d+) failed")
# A rank killed by a signal prints nothing itself; its launcher names it.
_RANK_ERROR = re.compile(r"hvdkit: error \(rank (\d+)\)")
_RANK_STOPPED = re.compile(r"hvdkit: rank (\d+) stopped")  # only because another failed
_RANK_LOST = re.compile(r"failure of Process (\d+)\.|"  # horovodrun --gloo
                        r"process rank (\d+) with PID \d+ on node \S+ exited on signal")  # mpirun


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
    command = [sys.executable, "-m", "hvdkit.launch.horovodrun", "-np", str(options.np),
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
    (seconds faster, see hvdkit.launch.mpirun), else horovodrun."""
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
    """More ranks than this host's cores, on this host alone: one line now, before the ranks
    start (they are told, and stay quiet; elsewhere each host's first rank checks itself)."""
    message = None if options.multi_host else oversubscribed_warning(options.np, cores())
    if message:
        print(message, file=sys.stderr, flush=True)
        os.environ[OVERSUBSCRIBED_WARNED] = "1"


def run_job(options: LaunchOptions, program: list[str], verbose: bool = False,
            env: dict[str, str] | None = None) -> int:
    """Run `program` on every rank (with `env` added to its environment), relaying the output
    (hvdkit.launch.console: rank 0's lines clean,
    other ranks' warnings and errors prefixed, start-up noise out; `verbose`: all of it raw);
    on failure, name the rank that failed first (hvdkit.launch.failures).

    SIGINT/SIGTERM stop the whole job (hvdkit.launch.guard); the ranks' heartbeats let the
    watchdog name a frozen rank and end the job (hvdkit.launch.monitor)."""
    command = job_command(options, program)
    console = Console(verbose=verbose)
    print("[hvdkit] launching:", shlex.join(command), file=sys.stderr, flush=True)
    # TensorFlow's C++ info lines (oneDNN, CPU features) repeat on every rank; keep warnings.
    peer_env = gloo_timeout_env(options.peer_timeout) if options.multi_host else {}
    job_dir = JobDir.create()
    guard = JobGuard(job_dir)
    monitor = Monitor(job_dir, *watchdog_seconds(options), end_job=guard.end)
    ranks_env = {"TF_CPP_MIN_LOG_LEVEL": "1", **peer_env, **os.environ, **(env or {}),
                 **job_dir.env()}
    printed = Printed()
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=ranks_env, text=True, bufsize=1, start_new_session=True) as job:
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
