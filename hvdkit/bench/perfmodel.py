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
from dataclasses import dataclass

from hvdkit.errors import UserError
from hvdkit.parallel.schedules import simulate
from hvdkit.parallel.traffic import bus_factor

EXCHANGES = ("ring", "fp16", "powersgd", "zero1", "ps")
_RATE = {"bit/s": 1 / 8, "kbit/s": 1e3 / 8, "mbit/s": 1e6 / 8, "gbit/s": 1e9 / 8,
         "b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Link:
    """One link class: `bandwidth` in bytes/s, `latency` (α) in seconds per message."""

    bandwidth: float
    latency: float

    def seconds(self, nbytes: float) -> float:
        """One point-to-point message of `nbytes`."""
        return self.latency + nbytes / self.bandwidth


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


def fused_exchange_end(ready: Sequence[tuple[float, float]],
                       allreduce: Callable[[float], float], fusion_bytes: float,
                       cycle: float) -> float:
    """When the last gradient is reduced, simulating Horovod's background loop.

    `ready`: (seconds into the step when a gradient is ready, its bytes). Every `cycle` (or
    when the previous cycle's collectives end, if later) the loop takes the ready gradients,
    fuses them in order into buffers of at most `fusion_bytes` (a larger one goes alone) and
    allreduces the buffers one after the other."""
    pending = sorted(ready)
    if not pending:
        return 0.0
    tick, end, i = cycle, 0.0, 0
    while i < len(pending):
        if pending[i][0] > tick:  # nothing ready: sleep to the first cycle after it
            tick += cycle * math.ceil((pending[i][0] - tick) / cycle)
            continue
        clock, buffer = tick, 0.0
        while i < len(pending) and pending[i][0] <= tick:
            size = pending[i][1]
            if buffer and buffer + size > fusion_bytes:
                clock += allreduce(buffer)
                buffer = 0.0
            buffer += size
            i += 1
        end = clock + allreduce(buffer)
        tick = max(end, tick + cycle)
    return end


def readiness(backward: float, tensor_bytes: Sequence[float], overlap: bool,
              start: float = 0.0) -> list[tuple[float, float]]:
    """When each gradient is ready: with `overlap`, in reverse order of the tensors (forward
    order given), each when the backward has run in proportion to the bytes up to it;
    without, all at the backward's end."""
    if not overlap:
        return [(start + backward, b) for b in tensor_bytes]
    total = sum(tensor_bytes) or 1.0
    out, done = [], 0.0
    for size in reversed(tensor_bytes):
        done += size
        out.append((start + backward * done / total, size))
    return out


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
    on_gpu = device is not None and any(name in device.lower() for name in ("cuda", "gpu"))
    return on_gpu or ranks_per_host * threads < cores


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
    overlap: bool = True
    """Whether the ring allreduce runs during backward (`overlaps_backward`)."""
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
        itemsize = 2 if exchange == "fp16" else work.itemsize
        ready = readiness(backward, work.tensor_bytes(itemsize), work.overlap)
        comm_end = fused_exchange_end(ready, lambda s: ring_allreduce_seconds(s, n, link),
                                      horovod.fusion_bytes, horovod.cycle)
        comm = sum(ring_allreduce_seconds(b, n, link)
                   for b in _buffers(work.tensor_bytes(itemsize), horovod.fusion_bytes))
        exposed = max(0.0, comm_end - backward)
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
    step = compute + exposed
    return {"ranks": n, "batch_per_rank": batch, "compute_s": compute, "comm_s": comm,
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
