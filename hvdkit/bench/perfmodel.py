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

The units, links and collectives' formulas live in hvdkit.bench.collectives, the fusion
simulation in hvdkit.bench.fusion; this module predicts a step and a pipeline from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hvdkit.bench.collectives import (  # noqa: F401  (re-exported: the model's public names)
    ETHERNET_IN_QDISC,
    ETHERNET_ON_WIRE,
    TCP_IP_HEADERS,
    Cluster,
    Link,
    parse_latency,
    parse_link,
    parse_rate,
    ps_seconds,
    reduce_scatter_seconds,
    ring_allreduce_seconds,
    tcp_payload_share,
)
from hvdkit.bench.fusion import (  # noqa: F401  (re-exported: the model's public names)
    Horovod,
    expected_exchange,
    fused_buffers,
    readiness,
    simulate_exchange,
)
from hvdkit.errors import UserError
from hvdkit.parallel.schedules import simulate
from hvdkit.parallel.traffic import bus_factor

EXCHANGES = ("ring", "fp16", "powersgd", "zero1", "ps")


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
        comm = sum(collective(b) for b in fused_buffers(sizes, horovod.fusion_bytes))
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
