"""Two "hosts" on this machine for multi-host tests: network namespaces reached over ssh.

    with two_hosts() as net:      # as root; needs `ip` (iproute2) and sshd (openssh-server)
        subprocess.run(["hvdkit", "train", ..., "-H", "ns1:1,ns2:1"], env=net.env)

By hand (brings the hosts up, runs the command with their ssh set-up, tears them down):

    python -m tests.integration.netns hvdkit train recipes/digits_mlp.yaml -np 2 \
        -H ns1:1,ns2:1 --controller gloo --network-interface hvk0

What it builds, and removes again on exit (failure included):
- a bridge `hvk0` at 10.77.0.1/24 in this (the launcher's) namespace;
- namespaces hvdkit-ns1 and hvdkit-ns2, each joined to the bridge by a veth pair whose inner
  end is also named `hvk0` (10.77.0.11, 10.77.0.12): one interface name on every host, as
  `--network-interface` expects;
- an sshd in each namespace, listening on that namespace's address only, with a host key and a
  client key made for this run, and with its own hostname (ns1, ns2) as a real host has;
- an `ssh` wrapper first on PATH (in `env`) that uses this run's ssh config, so horovodrun and
  mpirun reach the hosts with no change to ~/.ssh;
- `ns1`/`ns2` lines in /etc/hosts, marked and removed after.
Only one such network exists per machine at a time (concurrent runs wait on a lock on
/etc/hosts, so no lock file is left behind).
The namespaces share this machine's filesystem, so the same venv exists on "every host".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

INTERFACE = "hvk0"
SUBNET = "10.77.0"
LAUNCHER_ADDRESS = f"{SUBNET}.1"
HOSTS = {"ns1": f"{SUBNET}.11", "ns2": f"{SUBNET}.12"}
HOSTS_MARK = "# hvdkit-netns-test"
HOSTS_FILE = Path("/etc/hosts")  # edited, and locked so one such network exists at a time
SSHD = "/usr/sbin/sshd"


class Unavailable(Exception):
    """Network namespaces cannot be made here (the reason is the message)."""


@dataclass
class TwoHosts:
    """The running network: host names, addresses, and the environment that reaches them."""

    workdir: Path
    env: dict[str, str]
    addresses: dict[str, str] = field(default_factory=lambda: dict(HOSTS))
    interface: str = INTERFACE

    @staticmethod
    def namespace(host: str) -> str:
        return f"hvdkit-{host}"

    def sshd_log(self, host: str) -> str:
        return (self.workdir / f"sshd-{host}.log").read_text(errors="replace")

    def cut(self, host: str) -> None:
        """Take `host` off the network: its link goes down, as if its cable were pulled."""
        _ip("-n", self.namespace(host), "link", "set", INTERFACE, "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _quiet(*args: str) -> None:
    subprocess.run(list(args), capture_output=True)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed; run `make setup`"
    probe = f"hvdkit-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _quiet("ip", "netns", "del", probe)
    return None


def _remove_stale() -> None:
    """Remove what a killed earlier run left (we hold the lock, so none of it is in use)."""
    for host in HOSTS:
        _kill_namespace_processes(TwoHosts.namespace(host))
        _quiet("ip", "netns", "del", TwoHosts.namespace(host))
    _quiet("ip", "link", "del", INTERFACE)
    _edit_hosts_file(add=False)


def _kill_namespace_processes(namespace: str) -> None:
    """End every process in `namespace` (sshd and ranks this run started there), by pid."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)


def _edit_hosts_file(add: bool) -> None:
    """Add or remove the marked ns1/ns2 lines, in place (/etc/hosts may be a bind mount)."""
    kept = [line for line in HOSTS_FILE.read_text().splitlines() if HOSTS_MARK not in line]
    if add:
        kept += [f"{address} {name}  {HOSTS_MARK}" for name, address in HOSTS.items()]
    with HOSTS_FILE.open("r+") as f:
        f.write("\n".join(kept) + "\n")
        f.truncate()


def _build_network(stack: contextlib.ExitStack) -> None:
    in_use = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    if f"{SUBNET}." in in_use:
        raise RuntimeError(f"{SUBNET}.0/24 is already routed on this machine; the test needs it")
    _ip("link", "add", INTERFACE, "type", "bridge")
    stack.callback(_quiet, "ip", "link", "del", INTERFACE)
    _ip("addr", "add", f"{LAUNCHER_ADDRESS}/24", "dev", INTERFACE)
    _ip("link", "set", INTERFACE, "up")
    for index, (host, address) in enumerate(HOSTS.items(), start=1):
        namespace = TwoHosts.namespace(host)
        _ip("netns", "add", namespace)
        stack.callback(_quiet, "ip", "netns", "del", namespace)
        outer = f"hvk{index}r"
        _ip("link", "add", outer, "type", "veth", "peer", "name", INTERFACE, "netns", namespace)
        stack.callback(_quiet, "ip", "link", "del", outer)
        _ip("link", "set", outer, "master", INTERFACE)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", INTERFACE)
        _ip("-n", namespace, "link", "set", INTERFACE, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")


def _write_ssh_files(workdir: Path) -> dict[str, str]:
    """Keys, ssh client config and the `ssh` wrapper; returns the environment that uses them."""
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hvdkit-test",
                        "-f", str(workdir / key)], check=True)
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    (workdir / "ssh_config").write_text(
        f"Host *\n  IdentityFile {workdir / 'client_key'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
        "  LogLevel ERROR\n  ConnectTimeout 10\n")
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {workdir / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def _start_sshd(stack: contextlib.ExitStack, workdir: Path, host: str, address: str) -> None:
    config = workdir / f"sshd-{host}.conf"
    config.write_text(
        f"ListenAddress {address}\nPort 22\nHostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile none\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n"
        "AcceptEnv none\nMaxStartups 100\nMaxSessions 100\n")
    log = (workdir / f"sshd-{host}.log").open("w")
    stack.callback(log.close)
    namespace = TwoHosts.namespace(host)
    # Its own UTS namespace too, so the host's hostname is `host` (resolving to its address):
    # Horovod 0.28.1's per-process-set Gloo contexts bind to the hostname's address.
    sshd = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c",
         f"hostname {host} && exec {SSHD} -D -e -f {config}"],
        stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_kill_namespace_processes, namespace)
    stack.callback(sshd.wait)
    stack.callback(sshd.kill)
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=1):
            return
        if sshd.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise RuntimeError(f"sshd in {namespace} did not start:\n"
                               f"{(workdir / f'sshd-{host}.log').read_text()}")
        time.sleep(0.2)


@contextlib.contextmanager
def two_hosts() -> Iterator[TwoHosts]:
    """Build ns1 and ns2 with sshd; yield them; remove everything, even on failure.

    Raises Unavailable (the caller skips) only when namespaces cannot be made here.
    """
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing (Debian's openssh-server); run `make setup`")
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(HOSTS_FILE.open())
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale()
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hvdkit-net-")))
        privsep = Path("/run/sshd")  # sshd's privilege-separation directory
        if not privsep.exists():
            privsep.mkdir(mode=0o755, parents=True)
            stack.callback(shutil.rmtree, privsep, True)
        _build_network(stack)
        _edit_hosts_file(add=True)
        stack.callback(_edit_hosts_file, False)
        env = _write_ssh_files(workdir)
        for host, address in HOSTS.items():
            _start_sshd(stack, workdir, host, address)
        yield TwoHosts(workdir, env)


def main(argv: list[str]) -> int:
    """Run one command (argv) with ns1 and ns2 up; print how long it took."""
    if not argv:
        print(__doc__)
        return 2
    with two_hosts() as net:
        started = time.monotonic()
        code = subprocess.run(argv, env=net.env).returncode
        print(f"[netns] exit code {code} after {time.monotonic() - started:.1f}s",
              file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
