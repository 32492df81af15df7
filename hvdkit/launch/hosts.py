"""The hosts of a multi-host job: who they are, how long ranks wait for them, which were lost.

A host cut off mid-run (power, cable, link down) sends nothing, not even a reset, so without
a bound each side waits forever. hvdkit bounds that wait with one setting, `peer_timeout`:

- Gloo: HOROVOD_GLOO_TIMEOUT_SECONDS, the longest a rank waits in a collective (also the
  start-up rendezvous), after which the rank fails;
- MPI: TCP keepalives between mpirun and each host's daemon (OpenMPI's defaults notice a dead
  host after 8 minutes); mpirun then prints "ORTE has lost communication with a remote daemon"
  and ends the job.

When such a job fails, `report_lost_hosts` tries ssh to every host and names those that no
longer answer, so the message says which host was lost rather than only which rank failed.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROBE_SECONDS = 5


def host_names(hosts: str | None, hostfile: str | None) -> list[str]:
    """The host names of a `-H h1:2,h2:2` list or a hostfile (`host slots=N` or `host:N`)."""
    entries = hosts.split(",") if hosts else []
    if hostfile:
        for line in Path(hostfile).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(line.split()[0])
    names = [entry.strip().rsplit(":", 1)[0] for entry in entries if entry.strip()]
    return list(dict.fromkeys(names))


def rank_hosts(hosts: str | None, hostfile: str | None, np_: int) -> list[str]:
    """The host of each rank: horovodrun (Gloo and MPI alike) fills each host's slots in order."""
    entries = hosts.split(",") if hosts else []
    if hostfile:
        for line in Path(hostfile).read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words:
                slots = next((w.split("=", 1)[1] for w in words[1:] if w.startswith("slots=")),
                             None)
                entries.append(f"{words[0]}:{slots}" if slots else words[0])
    ranks: list[str] = []
    for entry in (e.strip() for e in entries if e.strip()):
        name, _, slots = entry.partition(":")
        ranks += [name] * (int(slots) if slots.isdigit() else 1)
    return ranks[:np_]


def gloo_timeout_env(seconds: int) -> dict[str, str]:
    """The environment that makes Gloo ranks give up on a silent peer after `seconds`."""
    return {"HOROVOD_GLOO_TIMEOUT_SECONDS": str(seconds)}


def mpi_keepalive_args(seconds: int) -> list[str]:
    """mpirun arguments that notice a silent host's daemon in about `seconds`:
    half of it idle, then 5 unanswered keepalive probes spread over the other half."""
    idle = max(1, seconds // 2)
    interval = max(1, (seconds - idle) // 5)
    return ["--mca", "oob_tcp_keepalive_time", str(idle),
            "--mca", "oob_tcp_keepalive_intvl", str(interval),
            "--mca", "oob_tcp_keepalive_probes", "5"]


def probe(host: str) -> str | None:
    """None when `ssh host true` works (through the user's ssh config); else why it failed."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={PROBE_SECONDS}", host, "true"]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=2 * PROBE_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer within {2 * PROBE_SECONDS}s"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"ssh exit code {done.returncode}"


def unreachable(hosts: list[str]) -> dict[str, str]:
    """The hosts that ssh cannot reach now, each with ssh's reason (probed in parallel)."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        reasons = dict(zip(hosts, pool.map(probe, hosts), strict=True))
    return {host: reason for host, reason in reasons.items() if reason is not None}


def report_lost_hosts(hosts: list[str], peer_timeout: int) -> list[str]:
    """After a failed job: print one clear line per host that no longer answers; return them."""
    lost = unreachable(hosts)
    for host, reason in lost.items():
        print(f"hvdkit: host {host} is unreachable ({reason}): it or its network went down "
              f"during the run, and the job stopped once its ranks had waited "
              f"--peer-timeout {peer_timeout}s for it. Bring the host back or leave it out, "
              "then rerun (or resume); `--elastic` carries on without lost hosts.",
              file=sys.stderr, flush=True)
    return list(lost)
