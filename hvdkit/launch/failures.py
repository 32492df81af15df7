"""The launcher's message after a failed job: only what is known, about the rank that failed first.

Sources, best first: the ranks' heartbeats (hvdkit.launch.monitor: how and when each rank ended),
then what the ranks and the launcher printed (`Printed`). "Its traceback is above" is said only
of a rank that printed one; a host from which no rank ever reported is named as one the job
could not start on, with ssh's reason, not as a host lost during the run.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field

from hvdkit.launch.hosts import probe, report_lost_hosts
from hvdkit.launch.monitor import Monitor
from hvdkit.runtime.heartbeat import CONSEQUENCE, ERROR, FAILED

LOCAL_NAMES = ("localhost", "127.0.0.1", socket.gethostname())


@dataclass
class Printed:
    """What the job's output said about its ranks (hvdkit.launch.job reads it line by line)."""

    tracebacks: set[int] = field(default_factory=set)  # "hvdkit: rank N failed" + traceback
    errors: set[int] = field(default_factory=set)  # "hvdkit: error (rank N): ..."
    followers: set[int] = field(default_factory=set)  # stopped because another rank failed
    lost: set[int] = field(default_factory=set)  # named by horovodrun or mpirun


def failure_lines(code: int, monitor: Monitor | None, printed: Printed) -> list[str]:
    """The lines that explain a job that ended with a non-zero `code`."""
    head = f"hvdkit: the job failed (exit code {code})"
    if monitor is not None and monitor.silenced:
        state = monitor.silenced[0]
        return [f"hvdkit: the job failed: {state.describe()} went silent ({state.step_text()}); "
                "the watchdog ended the job (--stall-shutdown-seconds)"]
    first = monitor.first_failure(printed.lost) if monitor is not None else None
    errors = {s.error for s in (monitor.ranks.values() if monitor else ()) if s.error}
    if first is not None and first.exit_kind == ERROR and len(errors) == 1 and all(
            s.exit_kind == ERROR for s in monitor.ranks.values()):
        return [f"{head}: every rank stopped with the same error: {errors.pop()}"]
    if first is not None:
        if first.exit_kind == FAILED or (first.exit is None and first.rank in printed.tracebacks):
            how = "it raised an error; its traceback is above"
        elif first.exit_kind == ERROR:
            how = "it stopped with the error above"
        elif first.exit_kind == CONSEQUENCE:
            how = "a collective failed because another rank was gone"
        elif first.exit is None:
            how = ("it ended without a message: killed by a signal, or crashed in native code"
                   + (" (see the launcher's line above)" if first.rank in printed.lost else ""))
        else:
            how = f"it exited with code {first.exit}"
        return [f"{head}: {first.describe()} failed first ({first.step_text()}): {how}"]
    if monitor is not None and not monitor.ranks and not (printed.tracebacks or printed.errors):
        return [f"{head} before any rank reported starting; the launcher's messages above "
                "say why"]
    named = (printed.tracebacks | printed.errors | printed.lost) - printed.followers \
        or printed.followers
    if not named:
        return [f"{head}; no rank said why: see the output above"]
    rank = min(named)
    how = ("its traceback is above" if rank in printed.tracebacks
           else "its error is above" if rank in printed.errors else "it printed no error")
    return [f"{head}: rank {rank} failed; {how}"]


def host_lines(hosts_by_rank: list[str], monitor: Monitor | None, peer_timeout: int) -> list[str]:
    """Multi-host, after a failed job: hosts no rank ever reported from could not start the job
    (with ssh's reason); only when every rank had started can a host have been lost during the
    run (`report_lost_hosts` probes the remote ones)."""
    hosts = list(dict.fromkeys(hosts_by_rank))
    heard = {hosts_by_rank[r] for r in (monitor.ranks if monitor else {})
             if r < len(hosts_by_rank)}
    if monitor is None or len(monitor.ranks) >= len(hosts_by_rank):
        report_lost_hosts([h for h in hosts if h not in LOCAL_NAMES], peer_timeout)
        return []
    reasons = {h: None if h in LOCAL_NAMES else probe(h) for h in hosts if h not in heard}
    blamed = {h: r for h, r in reasons.items() if r} or reasons  # unreachable ones, if any
    lines = [f"hvdkit: could not start on {host}: "
             f"{reason or 'no rank started there; the messages above say why'}"
             for host, reason in blamed.items()]
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines
