"""Which of an elastic job's hosts are one machine, and how many ranks each machine runs.

Elastic Horovod counts ranks per host *name*: with this machine listed twice (`localhost:1`
and `127.0.0.1:1`, the README's way to try elastic on one machine) each rank sees
`local_size() == 1`, takes every core for its threads, and the ranks oversubscribe the cores
(many times slower per epoch). At launch, hvdkit runs the discovery script once,
groups the names that reach the same machine (the loopback addresses and this machine's own
count as this machine), counts the ranks Horovod will place on each machine (hosts in order,
slots filled up to -np), and tells the ranks (`HVDKIT_MACHINE_RANKS`, read by
`hvdkit.runtime.world.ranks_on_machine`); each then takes cores ÷ that many threads.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from pathlib import Path

from hvdkit.errors import UserError

ENV = "HVDKIT_MACHINE_RANKS"


def discovered_hosts(script: str, timeout: float = 10) -> list[tuple[str, int]]:
    """The `host:slots` lines a host-discovery script prints now."""
    try:
        done = subprocess.run([str(Path(script).resolve())], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"host discovery script {script} did not answer in {timeout:.0f}s") \
            from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise UserError(f"host discovery script {script} failed: {reason}")
    hosts = []
    for line in done.stdout.split():
        name, _, slots = line.partition(":")
        hosts.append((name, int(slots) if slots.isdigit() else 1))
    return hosts


def _addresses(name: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return set()


def machine_of(name: str, own: set[str]) -> str:
    """A key shared by the names of one machine: `local` for this one, else its addresses."""
    addresses = _addresses(name)
    if any(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses) \
            or addresses & own:
        return "local"
    return ",".join(sorted(addresses)) or name


def ranks_per_machine(hosts: list[tuple[str, int]], np_: int) -> dict[str, int]:
    """host name → ranks on that host's machine, with `np_` ranks placed in host order."""
    own = _addresses(socket.gethostname())
    machines = {name: machine_of(name, own) for name, _ in hosts}
    placed: dict[str, int] = {}
    left = np_
    for name, slots in hosts:
        take = min(slots, left)
        placed[machines[name]] = placed.get(machines[name], 0) + take
        left -= take
    return {name: placed.get(machines[name], 0) for name, _ in hosts}


def machine_env(hosts: list[tuple[str, int]], np_: int) -> dict[str, str]:
    """The variable that tells each rank how many ranks share its machine."""
    table = ranks_per_machine(hosts, np_)
    return {ENV: ",".join(f"{name}={count}" for name, count in table.items() if count)}


def elastic_interface(hosts: list[tuple[str, int]], given: str | None) -> str | None:
    """The --network-interface an elastic job needs. Without one, horovodrun waits for a
    second host before it picks the interfaces the hosts share: a hosts file naming one host
    would hang silently. That host being this machine, the loopback interface is the answer;
    another single host needs the flag."""
    names = {name for name, _ in hosts}
    if given or len(names) >= 2:
        return given
    own = _addresses(socket.gethostname())
    if all(machine_of(name, own) == "local" for name in names):
        loopback = [name for _, name in socket.if_nameindex() if name == "lo"]
        if loopback:
            return loopback[0]
    raise UserError(f"--elastic with one host ({', '.join(sorted(names)) or 'none yet'}) needs "
                    "--network-interface NIC: horovodrun waits for a second host otherwise")


def elastic_settings(script: str, np_: int, nic: str | None) -> tuple[dict[str, str], str | None]:
    """For an elastic launch: the ranks' machine counts (env) and the network interface."""
    hosts = discovered_hosts(script)
    return machine_env(hosts, np_), elastic_interface(hosts, nic)
