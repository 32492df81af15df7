"""The performance model behind `hvdkit predict`: a step's time from compute and an α–β network.

    step = compute (forward + backward + the rest) + the exchange's exposed communication

Each link class (within a host, between hosts) is α (seconds per message) and β (bytes/s).

    ring allreduce of S bytes over n ranks   2(n−1)α + 2(n−1)/n · S/β
    reduce-scatter, all-gather               (n−1)α + (n−1)/n · S/β each   (ZeRO-1: both)
    parameter server                         the root's link carries (g + p)(n−1) bytes
    PowerSGD                                 two ring allreduces (P, then Q) of S/ratio in all
    pipeline                                 the schedule simulator (hvdkit.parallel.schedules)
                                             with each F and B costing one point-to-point message

A flat ring across hosts runs at the pace of its slowest hop: the link between hosts whenever
there are two or more. Horovod's tensor fusion is simulated: every cycle its background thread
takes the gradients that are ready, fuses them into buffers of at most the fusion threshold and
allreduces them one after the other; with overlap (PyTorch's hooks) gradients become ready
during backward, without it (TensorFlow's grouped allreduce, PowerSGD, ZeRO-1, the parameter
server) all at its end. Only communication still running after the backward is exposed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hvdkit.errors import UserError
from hvdkit.parallel.schedules import simulate
from hvdkit.parallel.traffic import bus_factor

EXCHANGES = ("ring", "fp16", "powersgd", "zero1", "ps")
_RATE = {"bit/s": 1 / 8, "kbit/s": 1e3 / 8, "mbit/s": 1e6 / 8, "gbit/s": 1e9 / 8,
         "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9}
_EPS = 1e-12  # seconds: float rounding, far below any modelled time
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


def simulate_exchange(ready: Sequence[tuple[float, float]],
                      allreduce: Callable[[float], float], fusion_bytes: float, cycle: float,
                      phase: float, backward: float,
                      on_core: Callable[[float], float] | None = None) -> tuple[float, float]:
    """(when the last gradient is reduced, when backward ends), simulating Horovod's loop.

    `ready`: (seconds of backward run when a gradient is ready, its bytes). The loop wakes at
    `phase`, then every `cycle` (or when the previous cycle's collectives end, if later),
    takes the ready gradients, fuses them in order into buffers of at most `fusion_bytes` (a
    larger one goes alone) and allreduces the buffers one after the other. `on_core`: no core
    is free for the collectives, so backward pauses while they work on the host, for
    `on_core(bytes)` seconds of each (all of it within a host; over a network backward runs
    on while the link carries the bytes); None: a core is free and backward runs on beside
    them."""
    pending = sorted((min(at, backward), size) for at, size in ready)
    clock, done, end, tick, i = 0.0, 0.0, 0.0, phase, 0
    backward_end = backward if not pending else None

    def run_backward(until: float) -> None:
        nonlocal clock, done, backward_end
        if backward_end is None and done + (until - clock) >= backward - _EPS:
            backward_end = clock + (backward - done)
        done, clock = min(backward, done + until - clock), until

    while i < len(pending):
        run_backward(tick)
        if pending[i][0] > done + _EPS:  # nothing ready: sleep to the first cycle after it
            tick += cycle * max(1, math.ceil((pending[i][0] - done) / cycle - _EPS))
            continue
        buffer = 0.0
        while i < len(pending) and pending[i][0] <= done + _EPS:
            size = pending[i][1]
            if buffer and buffer + size > fusion_bytes:
                clock = _collective(clock, buffer, allreduce, on_core, run_backward)
                buffer = 0.0
            buffer += size
            i += 1
        clock = end = _collective(clock, buffer, allreduce, on_core, run_backward)
        tick = max(clock, tick + cycle)
    if backward_end is None:
        run_backward(clock + backward - done)
    return end, float(backward_end)


def _collective(clock: float, nbytes: float, allreduce: Callable[[float], float],
                on_core: Callable[[float], float] | None,
                run_backward: Callable[[float], None]) -> float:
    """One collective from `clock`; backward runs during the part not on the core."""
    seconds = allreduce(nbytes)
    run_backward(clock + max(0.0, seconds - (on_core(nbytes) if on_core else 0.0)))
    return clock + seconds


def expected_exchange(ready: Sequence[tuple[float, float]],
                      allreduce: Callable[[float], float], horovod: Horovod, backward: float,
                      on_core: Callable[[float], float] | None = None,
                      phases: int = 8) -> tuple[float, float]:
    """`simulate_exchange` averaged over where in Horovod's cycle the step's backward
    starts (uniform: the loop's phase is not tied to the step)."""
    runs = [simulate_exchange(ready, allreduce, horovod.fusion_bytes, horovod.cycle,
                              (k + 0.5) / phases * horovod.cycle, backward, on_core)
            for k in range(phases)]
    return (sum(r[0] for r in runs) / phases, sum(r[1] for r in runs) / phases)


def readiness(backward: float, tensor_bytes: Sequence[float], early: bool,
              start: float = 0.0, fractions: Sequence[float] = ()) -> list[tuple[float, float]]:
    """When each gradient is handed to Horovod: `early` (PyTorch's hooks), each when backward
    has done its `fractions` (measured: `hvdkit.bench.gradient_ready`; forward order like the
    tensors) or, without, in reverse order of the tensors, in proportion to the bytes up to
    it; otherwise all at the backward's end."""
    if not early:
        return [(start + backward, b) for b in tensor_bytes]
    if len(fractions) == len(tensor_bytes):
        return [(start + backward * f, b) for f, b in zip(fractions, tensor_bytes, strict=True)]
    total = sum(tensor_bytes) or 1.0
    out, done = [], 0.0
    for size in reversed(tensor_bytes):
        done += size
        out.append((start + backward * done / total, size))
    return out


def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals]: 0 for one, 1/√π for two, 1.03 for 4, 1.42
    for 8, 2.34 for 64 (by quadrature of n·x·φ(x)·Φ(x)^(n−1))."""
    if n <= 1:
        return 0.0
    x = np.linspace(-9.0, 9.0, 3601)
    pdf = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return float(np.trapezoid(n * x * pdf * cdf ** (n - 1), x))


def overlaps_backward(framework: str, device: str | None, ranks_per_host: int, threads: int,
                      cores: int) -> bool:
    """Whether the ring allreduce runs during backward: PyTorch's hooks start it there
    (TensorFlow's grouped allreduce waits for the whole backward), and on a CPU host only if
    the ranks' compute threads leave a core free for it, since the kernel's networking, the
    reductions and Horovod's background loop run on the same cores; with none free they
    take their time from compute and the exchange adds to the step. `device`: the rank's
    (`cuda:0`, `gpu`; None or anything without a GPU's name is the CPU)."""
    if framework != "torch":
        return False
    return on_gpu(device) or ranks_per_host * threads < cores


def on_gpu(device: str | None) -> bool:
    """Whether a rank's device (`cuda:0`, `gpu`, `cpu`, a placement's `cpu,cpu`; None: the
    CPU) is a GPU."""
    return device is not None and any(name in device.lower() for name in ("cuda", "gpu"))


# -- a workload and its predicted step ------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What one rank computes and exchanges per step.

    Compute at a batch of b samples per rank is `fixed` + b × (forward + backward) seconds
    (linear in b: the assumption that lets one calibration batch predict the others)."""

    parameters: int
    forward: float
    """Seconds per sample of the forward pass."""
    backward: float
    """Seconds per sample of the backward pass."""
    fixed: float = 0.0
    """Seconds per step besides forward and backward (optimizer, data, loop)."""
    itemsize: int = 4
    tensors: tuple[float, ...] = ()
    """Parameter tensors' sizes in elements, forward order (empty: 16 equal parts)."""
    ready: tuple[float, ...] = ()
    """When each tensor's gradient is ready, as a fraction of backward (forward order; empty:
    in proportion to the bytes, `readiness`)."""
    overlap: bool = True
    """Whether a core (or the device) is free for the exchange beside backward
    (`overlaps_backward`); without, collectives started during backward pause it while they
    work on the host (`simulate_exchange`)."""
    early: bool = True
    """Gradients handed to Horovod as backward readies them (PyTorch's hooks); False: all
    after backward (TensorFlow's grouped allreduce)."""
    host_per_byte: dict[str, float] = field(default_factory=dict)
    """Seconds per wire byte that an exchange ("ring", "fp16") spends on the host besides
    the link's transfer: the fusion buffer's copies, the casts, the reductions
    (`host_per_byte`, calibrated; none given: 0)."""
    jitter: float = 0.0
    """A rank's step-to-step spread of compute, as a fraction of it (standard deviation ÷
    mean): a synchronous step waits for the slowest of the ranks (`expected_max_normal`)."""
    powersgd_ratio: float = 8.0
    activation_bytes: float = 0.0
    """Bytes per sample crossing each pipeline boundary (each way)."""

    @property
    def gradient_bytes(self) -> float:
        return float(self.parameters * self.itemsize)

    def tensor_bytes(self, itemsize: int) -> list[float]:
        sizes = list(self.tensors) or [self.parameters / 16] * 16
        return [s * itemsize for s in sizes]

    def compute(self, batch: float) -> tuple[float, float]:
        """(forward + fixed, backward) seconds at `batch` samples per rank."""
        return self.fixed + batch * self.forward, batch * self.backward


def measured_workload(parameters: int, per_sample: float, framework: str, device: str | None,
                      ranks_per_host: int, threads: int, cores: int,
                      **given: object) -> Workload:
    """The workload of a step measured on this machine at `per_sample` seconds per sample:
    backward 2/3 of it, gradients handed over during backward by PyTorch (after it by
    TensorFlow), overlap as `overlaps_backward` finds it for this host; `given`: the other
    Workload fields."""
    return Workload(parameters=parameters, forward=per_sample / 3, backward=per_sample * 2 / 3,
                    early=framework == "torch",
                    overlap=overlaps_backward(framework, device, ranks_per_host, threads, cores),
                    **given)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Horovod:
    """Horovod's fusion settings: HOROVOD_FUSION_THRESHOLD (bytes), HOROVOD_CYCLE_TIME (s)."""

    fusion_bytes: float = 128 * 1024 * 1024
    cycle: float = 1e-3


def predict_step(work: Workload, cluster: Cluster, exchange: str, batch: float,
                 horovod: Horovod = Horovod()) -> dict[str, float]:
    """One data-parallel configuration: step seconds and its parts, at `batch` per rank."""
    if exchange not in EXCHANGES:
        raise UserError(f"unknown exchange {exchange!r}; valid: {', '.join(EXCHANGES)}")
    n, link = cluster.ranks, cluster.ring_link()
    forward, backward = work.compute(batch)
    compute = forward + backward
    grads = work.gradient_bytes
    comm = 0.0
    if n > 1 and exchange in ("ring", "fp16"):
        sizes = work.tensor_bytes(2 if exchange == "fp16" else work.itemsize)
        host = work.host_per_byte.get(exchange, 0.0)

        def collective(nbytes: float) -> float:
            return ring_allreduce_seconds(nbytes, n, link) + host * nbytes

        def on_core(nbytes: float) -> float:
            """Within a host the transfer is the cores' copying too; over a network the
            host's share alone (the cores are free while the link carries the bytes)."""
            return collective(nbytes) if cluster.hosts == 1 else host * nbytes

        ready = readiness(backward, sizes, work.early, fractions=work.ready)
        comm_end, backward_end = expected_exchange(
            ready, collective, horovod, backward,
            on_core=on_core if work.early and not work.overlap else None)
        comm = sum(collective(b) for b in _buffers(sizes, horovod.fusion_bytes))
        # a token bucket refills while the step computes before its first collective; its
        # burst then goes at once (at most the step's bytes), and the collectives after it
        # follow that much earlier
        wire = bus_factor(n) * sum(sizes) / link.bandwidth
        credit = min(wire, link.credit_seconds(forward + min(at for at, _ in ready)))
        exposed = max(comm_end - credit, backward_end) - backward
    elif n > 1:
        if exchange == "powersgd":  # P then Q, each about half the low-rank bytes
            comm = 2 * ring_allreduce_seconds(grads / work.powersgd_ratio / 2, n, link)
        elif exchange == "zero1":  # gradients scattered, updated shards gathered
            comm = 2 * reduce_scatter_seconds(grads, n, link)
        else:
            comm = ps_seconds(grads, grads, cluster)
        exposed = comm + horovod.cycle / 2 * (exchange != "ps")
    else:
        exposed = 0.0
    # a synchronous step waits for the slowest rank's compute
    straggle = work.jitter * compute * expected_max_normal(n)
    step = compute + straggle + exposed
    return {"ranks": n, "batch_per_rank": batch, "compute_s": compute, "comm_s": comm,
            "straggle_s": straggle,
            "exposed_comm_s": exposed, "step_s": step, "samples_per_sec": n * batch / step}


def _buffers(sizes: Sequence[float], fusion_bytes: float) -> list[float]:
    """The sizes fused greedily into buffers of at most `fusion_bytes` (all ready at once)."""
    out, buffer = [], 0.0
    for size in sizes:
        if buffer and buffer + size > fusion_bytes:
            out.append(buffer)
            buffer = 0.0
        buffer += size
    return [*out, buffer] if buffer else out


def host_per_byte(measured: dict[str, float], work: Workload, link: Link,
                  horovod: Horovod = Horovod()) -> dict[str, float]:
    """Per wire byte, what each exchange of `work`'s gradients took on the host beyond the
    model's own account of it (the wait for the cycle, the link's α–β transfer): `measured`,
    the seconds of the exchange alone between 2 ranks of one host over `link`
    (hvdkit.bench.calibrate.calibrate_exchange). Assumed the same at any rank count and link:
    the fusion buffer's copies and the casts are per rank, the ring's reductions nearly so."""
    out = {}
    for exchange, seconds in measured.items():
        sizes = work.tensor_bytes(2 if exchange == "fp16" else work.itemsize)
        modeled, _ = expected_exchange([(0.0, b) for b in sizes],
                                       lambda nbytes: ring_allreduce_seconds(nbytes, 2, link),
                                       horovod, 0.0)
        out[exchange] = max(0.0, seconds - modeled) / max(sum(sizes), 1.0)
    return out


def predict_pipeline(work: Workload, cluster: Cluster, schedule: str, stages: int,
                     microbatches: int, batch: float, virtual: int = 1,
                     horovod: Horovod = Horovod()) -> dict[str, float]:
    """A pipeline of `stages` consecutive ranks (replicas = ranks ÷ stages), `batch` samples
    per replica split in `microbatches`: the simulated span, then the stage's gradients
    ring-allreduced over its replicas after the last backward."""
    n = cluster.ranks
    if n % stages:
        raise UserError(f"{n} ranks do not split into pipelines of {stages} stages")
    replicas = n // stages
    mb = batch / microbatches
    forward, backward = work.compute(mb)
    hop = cluster.intra if stages <= cluster.ranks_per_host else cluster.inter
    message = hop.seconds(work.activation_bytes * mb) if stages > 1 else 0.0
    # simulate() charges a chunk 1/v of a stage's cost: v chunks, each with its own message
    sim = simulate(schedule, stages, microbatches, virtual,
                   forward=forward / stages + message * virtual,
                   backward=backward / 2 / stages + message * virtual,
                   weight=backward / 2 / stages)
    dp_link = cluster.inter if replicas > 1 and cluster.hosts > 1 else cluster.intra
    comm = ring_allreduce_seconds(work.gradient_bytes / stages, replicas, dp_link)
    step = sim.span + comm
    return {"ranks": n, "stages": stages, "replicas": replicas, "microbatches": microbatches,
            "batch_per_rank": batch, "compute_s": (forward + backward) / stages,
            "bubble": max(sim.idle), "comm_s": comm, "exposed_comm_s": comm,
            "step_s": step, "samples_per_sec": replicas * batch / step}
