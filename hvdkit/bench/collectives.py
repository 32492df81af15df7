"""Units and the α–β network: a link class, a cluster of hosts, and the collectives' costs.

Parses the `--network` forms ('25Gbit/s,10us'), counts what TCP and Ethernet take of a link,
and prices a ring allreduce, a reduce-scatter (or all-gather) and a parameter server's step
(the formulas listed in hvdkit.bench.perfmodel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hvdkit.errors import UserError
from hvdkit.parallel.traffic import bus_factor

_RATE = {"bit/s": 1 / 8, "kbit/s": 1e3 / 8, "mbit/s": 1e6 / 8, "gbit/s": 1e9 / 8,
         "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Link:
    """One link class: `bandwidth` in bytes/s, `latency` (α) in seconds per message."""

    bandwidth: float
    latency: float
    burst: float = 0.0
    """Bytes a token-bucket link (`tc ... tbf`, a cloud VM's burst credit) passes at once
    after it has been idle long enough to refill them at `bandwidth`; 0: a wire."""

    def seconds(self, nbytes: float) -> float:
        """One point-to-point message of `nbytes`."""
        return self.latency + nbytes / self.bandwidth

    def credit_seconds(self, idle: float) -> float:
        """Transfer time saved by the burst the bucket refilled in `idle` seconds."""
        return min(self.burst, idle * self.bandwidth) / self.bandwidth


def _number(text: str, units: dict[str, float], what: str) -> float:
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Zµ/]+)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in units:
        raise UserError(f"{what} {text!r}: expected a number and one of {', '.join(units)}")
    try:
        value = float(match.group(1)) * units[unit]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a number") from None
    if (value <= 0 and what == "bandwidth") or value < 0:
        raise UserError(f"{what} {text!r} must be positive")
    return value


def parse_rate(text: str | float) -> float:
    """'25Gbit/s', '1.5GB/s' (decimal units) or a number of bytes/s → bytes/s."""
    if isinstance(text, (int, float)):
        if text <= 0:
            raise UserError(f"bandwidth {text!r} must be positive")
        return float(text)
    return _number(str(text), _RATE, "bandwidth")


def parse_latency(text: str | float) -> float:
    """'10us', '0.5ms' or a number of seconds → seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    return _number(str(text), _TIME, "latency")


TCP_IP_HEADERS = 52
"""Bytes of IPv4 (20) and TCP headers (20, and 12 of the timestamps option Linux sends) in
each packet."""
ETHERNET_ON_WIRE = 38
"""Bytes a physical Ethernet link spends per frame besides the IP packet: header 14, FCS 4,
preamble 8, inter-frame gap 12."""
ETHERNET_IN_QDISC = 14
"""What a Linux qdisc (`tc ... tbf`) counts per frame besides the IP packet: the header."""


def tcp_payload_share(mtu: int = 1500, framing: int = ETHERNET_ON_WIRE) -> float:
    """The share of an Ethernet link's bytes that is TCP payload (what Gloo or MPI over TCP
    moves): each packet of `mtu` bytes carries mtu − 52 of payload and costs mtu + `framing`
    on the link (MTU 1500: 94.1% on a wire, 95.6% through a qdisc; 9000: 99.0% on a wire)."""
    if mtu <= TCP_IP_HEADERS:
        raise UserError(f"an MTU of {mtu} bytes leaves no room for TCP's payload")
    return (mtu - TCP_IP_HEADERS) / (mtu + framing)


def parse_link(text: str) -> Link:
    """'25Gbit/s,10us' → Link (the `--network` form)."""
    parts = [p for p in text.split(",") if p.strip()]
    if len(parts) != 2:
        raise UserError(f"--network {text!r}: expected BANDWIDTH,LATENCY, e.g. 25Gbit/s,10us")
    return Link(parse_rate(parts[0]), parse_latency(parts[1]))


@dataclass(frozen=True)
class Cluster:
    """`hosts` hosts of `ranks_per_host` ranks each; `intra` links ranks of one host."""

    ranks_per_host: int
    hosts: int
    intra: Link
    inter: Link

    @property
    def ranks(self) -> int:
        return self.ranks_per_host * self.hosts

    def ring_link(self) -> Link:
        """The slowest hop of a flat ring: between hosts as soon as there are two."""
        return self.inter if self.hosts > 1 else self.intra



# -- the collectives ------------------------------------------------------------------------


def ring_allreduce_seconds(nbytes: float, n: int, link: Link) -> float:
    """2(n−1)α + 2(n−1)/n · S/β (0 for one rank)."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * link.latency + bus_factor(n) * nbytes / link.bandwidth


def reduce_scatter_seconds(nbytes: float, n: int, link: Link) -> float:
    """(n−1)α + (n−1)/n · S/β; an all-gather of S bytes in all costs the same."""
    if n <= 1:
        return 0.0
    return (n - 1) * link.latency + (n - 1) / n * nbytes / link.bandwidth


def ps_seconds(grad_bytes: float, param_bytes: float, cluster: Cluster) -> float:
    """The parameter server's step: its host takes n−1 gradients in and sends n−1 parameter
    copies out; ranks on its own host over the intra link, the others over its one link to
    the other hosts (the two in parallel), each direction one message deep."""
    if cluster.ranks <= 1:
        return 0.0
    local = cluster.ranks_per_host - 1
    remote = cluster.ranks - cluster.ranks_per_host
    per = grad_bytes + param_bytes
    times = []
    if local:
        times.append(2 * cluster.intra.latency + local * per / cluster.intra.bandwidth)
    if remote:
        times.append(2 * cluster.inter.latency + remote * per / cluster.inter.bandwidth)
    return max(times)
