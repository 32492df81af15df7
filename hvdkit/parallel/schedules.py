"""Pipeline schedules, framework-free: each stage's list of ops, a simulator, the ideal figures.

A schedule is, per stage (rank of one pipeline), the order in which it runs its ops:

    F  forward of a micro-batch through one of the stage's chunks
    B  backward: with `zb-h1` only the input's gradient (sent upstream at once); otherwise the
       whole backward (input and weight gradients)
    W  (`zb-h1` only) the weight gradients of a micro-batch whose B has run, deferred into the
       slots where the stage would otherwise wait

    schedule("1f1b", stage=0, stages=2, microbatches=4)   # [F0, F1, B0, F2, B1, F3, B2, B3]
    schedule("interleaved", 0, 2, 4, virtual=2)           # chunks 0 and 1: [F0, F1, F0c1, ...]
    simulate("zb-h1", stages=4, microbatches=8).idle      # each stage's idle share

Chunks (virtual stages, `interleaved`): the model is cut into stages × v chunks and stage s
holds chunks s, s + p, s + 2p, ... (`Op.chunk` is the local index k, global chunk k·p + s), so a
micro-batch visits every stage v times and the last stage sends back to the first. A message
crosses the *boundary* c between global chunks c − 1 and c (1 ≤ c < p·v); `message_tag` makes a
tag from the micro-batch, the boundary and the direction that no other message of a step shares.

The simulator runs every stage's list on one clock with the pipeline's dependencies (a forward
needs the previous chunk's forward of that micro-batch, a backward the next chunk's backward, a
W its own B), a stage blocking on each op in order, as the executor does: it finds deadlocks,
and each stage's idle share and peak activations held, to compare with the ideal formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")


class Op(NamedTuple):
    """One step of a stage's schedule: `kind` F, B or W of `microbatch` through local `chunk`."""

    kind: str
    microbatch: int
    chunk: int = 0

    def __repr__(self) -> str:
        return f"{self.kind}{self.microbatch}" + (f"c{self.chunk}" if self.chunk else "")


def splits_backward(name: str) -> bool:
    """Whether the schedule's B computes only the input's gradient, its W the weights'."""
    return name == "zb-h1"


# -- the schedules --------------------------------------------------------------------------


def gpipe(stage: int, stages: int, microbatches: int) -> list[Op]:
    """All forwards, then all backwards: every stage holds all m micro-batches at the peak."""
    m = range(microbatches)
    return [Op("F", i) for i in m] + [Op("B", i) for i in m]


def one_f_one_b(stage: int, stages: int, microbatches: int) -> list[Op]:
    """Warm-up forwards, then one forward one backward, then the remaining backwards.

    Stage s runs `stages − s − 1` warm-up forwards, so it never holds more than
    `stages − s` micro-batches (PipeDream-flush / Megatron's non-interleaved 1F1B)."""
    warmup = min(stages - stage - 1, microbatches)
    ops = [Op("F", i) for i in range(warmup)]
    for i in range(microbatches - warmup):
        ops += [Op("F", warmup + i), Op("B", i)]
    return ops + [Op("B", i) for i in range(microbatches - warmup, microbatches)]


def interleaved(stage: int, stages: int, microbatches: int, virtual: int) -> list[Op]:
    """1F1B over v chunks per stage (Megatron-LM's interleaved schedule).

    Micro-batches go in groups of p: a group runs forward through chunk 0, then chunk 1, ...,
    and backward through the chunks in reverse. Stage s starts with Megatron's
    (v − 1)·p + 2·(p − s − 1) warm-up forwards: p − s − 1 more than the fewest that keep the
    ring moving, so a stage's next input is already in flight while it runs a backward and
    jitter in op times does not stall its neighbour (measured, p = 2, v = 2, m = 8: idle share
    0.12 with the fewest, 0.09 with these; ideal 0.06). That holds one more chunk than the
    warm-ups at the peak: stage 0, p + (p − 1)/v stages' worth (1F1B: p). v = 1 is 1F1B (its
    p − s − 1 warm-ups: with one chunk a stage's input arrives as the previous op ends).
    Needs m to be a multiple of p (the layout checks it)."""
    p, m, v = stages, microbatches, virtual
    if m % p:
        raise ValueError(f"interleaved needs microbatches ({m}) to be a multiple of stages ({p})")
    groups = range(m // p)
    forwards = [Op("F", g * p + j, k) for g in groups for k in range(v) for j in range(p)]
    backwards = [Op("B", g * p + j, k) for g in groups for k in reversed(range(v))
                 for j in range(p)]
    total = m * v
    slack = p - stage - 1 if v > 1 else 0
    warmup = min((v - 1) * p + (p - stage - 1) + slack, total)
    ops = forwards[:warmup]
    for i in range(total - warmup):
        ops += [forwards[warmup + i], backwards[i]]
    return ops + backwards[total - warmup:]


def zb_h1(stage: int, stages: int, microbatches: int) -> list[Op]:
    """Zero-bubble ZB-H1 (Qi et al., 2023): 1F1B with each backward split into B (the input's
    gradient, which the stage upstream waits for) and W (the weights', which nobody waits for).

    Stage s runs 1F1B's p − s − 1 warm-up forwards, then F, B, W triples whose W lags s
    micro-batches behind, then the last B's and the deferred W's. The lag fills stage s's
    waits at the end of the step with W's, and keeps every stage at p micro-batches held at
    most (activations are freed after W), 1F1B's peak."""
    p, m = stages, microbatches
    warmup = min(p - stage - 1, m)
    lag = stage
    ops = [Op("F", i) for i in range(warmup)]
    w = 0
    for i in range(m - warmup):
        ops += [Op("F", warmup + i), Op("B", i)]
        if i >= lag:
            ops.append(Op("W", w))
            w += 1
    for i in range(m - warmup, m):
        ops.append(Op("B", i))
        if w < m:
            ops.append(Op("W", w))
            w += 1
    return ops + [Op("W", i) for i in range(w, m)]


def schedule(name: str, stage: int, stages: int, microbatches: int,
             virtual: int = 1) -> list[Op]:
    """Stage `stage`'s ops for one batch of `microbatches` (`virtual` chunks: interleaved)."""
    if name == "interleaved":
        return interleaved(stage, stages, microbatches, virtual)
    if virtual != 1:
        raise ValueError(f"{name} runs one chunk per stage, not {virtual}")
    if name == "gpipe":
        return gpipe(stage, stages, microbatches)
    if name == "1f1b":
        return one_f_one_b(stage, stages, microbatches)
    if name == "zb-h1":
        return zb_h1(stage, stages, microbatches)
    raise ValueError(f"unknown schedule {name!r}; the layout accepts {', '.join(SCHEDULES)}")


# -- chunks and messages --------------------------------------------------------------------


def global_chunk(op: Op, stage: int, stages: int) -> int:
    """The model chunk an op runs, counted over the whole pipeline (0 … p·v − 1)."""
    return op.chunk * stages + stage


def message_tag(microbatch: int, boundary: int, direction: int, boundaries: int) -> int:
    """A step's message tag: micro-batch, boundary (1 … `boundaries`) and direction (0, 1)."""
    return 2 * (microbatch * boundaries + boundary - 1) + direction


# -- the figures ----------------------------------------------------------------------------


def peak_in_flight(ops: list[Op]) -> int:
    """The most (micro-batch, chunk) activations a stage holds: from F until the backward that
    frees them (W where the schedule has W's, B otherwise)."""
    frees = "W" if any(op.kind == "W" for op in ops) else "B"
    held = peak = 0
    for op in ops:
        held += 1 if op.kind == "F" else -1 if op.kind == frees else 0
        peak = max(peak, held)
    return peak


def ideal_bubble(name: str, stages: int, microbatches: int, virtual: int = 1) -> float:
    """The idle share of each stage with equal stage times and free communication (F, B and
    W of equal cost for zb-h1): (p − 1)/(m + p − 1) for GPipe and 1F1B, (p − 1)/(v·m + p − 1)
    interleaved, (p − 1)/(3m + p − 1) for ZB-H1."""
    p, m = stages, microbatches
    if name == "zb-h1":
        return (p - 1) / (3 * m + p - 1)
    if name == "interleaved":
        return (p - 1) / (virtual * m + p - 1)
    return (p - 1) / (m + p - 1)


@dataclass(frozen=True)
class Simulation:
    """A simulated step: its span (in units of one F), each stage's idle share and peak
    (micro-batch, chunk) activations held."""

    span: float
    idle: list[float]
    peak: list[int]


def check_ops(name: str, ops: list[Op], microbatches: int, virtual: int = 1) -> None:
    """Raise ValueError unless `ops` runs each op a stage owes exactly once, F before B
    before W for every (micro-batch, chunk)."""
    kinds = "FBW" if splits_backward(name) else "FB"
    owed = {Op(k, i, c) for k in kinds for i in range(microbatches) for c in range(virtual)}
    if len(ops) != len(owed) or set(ops) != owed:
        raise ValueError(f"{name}: ops {ops} are not each of {sorted(owed)} once")
    at = {op: n for n, op in enumerate(ops)}
    for i in range(microbatches):
        for c in range(virtual):
            order = [at[Op(k, i, c)] for k in kinds]
            if order != sorted(order):
                raise ValueError(f"{name}: micro-batch {i} chunk {c} runs out of order")


def simulate(name: str, stages: int, microbatches: int, virtual: int = 1,
             forward: float = 1.0, backward: float = 1.0, weight: float = 1.0,
             plans: list[list[Op]] | None = None) -> Simulation:
    """Run every stage's ops (the schedule's, or `plans`) on one clock: `forward`, `backward`
    (input gradient) and `weight` are a whole stage's costs (a chunk costs 1/v of them; an
    unsplit B costs backward + weight). Raises RuntimeError if the stages deadlock."""
    p, v = stages, virtual
    plans = plans or [schedule(name, s, p, microbatches, v) for s in range(p)]
    for ops in plans:
        check_ops(name, ops, microbatches, v)
    split = splits_backward(name)
    cost = {"F": forward / v, "B": (backward if split else backward + weight) / v,
            "W": weight / v}
    last = p * v - 1
    done: dict[tuple[str, int, int], float] = {}  # (kind, micro-batch, global chunk) → end
    nexts, clocks, busy = [0] * p, [0.0] * p, [0.0] * p
    while any(n < len(ops) for n, ops in zip(nexts, plans, strict=True)):
        progressed = False
        for s in range(p):
            while nexts[s] < len(plans[s]):
                op = plans[s][nexts[s]]
                c = global_chunk(op, s, p)
                dep = (("F", op.microbatch, c - 1) if op.kind == "F" and c > 0
                       else ("B", op.microbatch, c + 1) if op.kind == "B" and c < last
                       else None)  # a stage's own earlier ops are done: check_ops ordered them
                if dep is not None and dep not in done:
                    break
                start = max(clocks[s], done[dep]) if dep else clocks[s]
                clocks[s] = done[(op.kind, op.microbatch, c)] = start + cost[op.kind]
                busy[s] += cost[op.kind]
                nexts[s] += 1
                progressed = True
        if not progressed:
            stuck = {s: plans[s][nexts[s]] for s in range(p) if nexts[s] < len(plans[s])}
            raise RuntimeError(f"{name} deadlocks with {p} stages, {microbatches} micro-batches"
                               f", {v} chunks: stages wait at {stuck}")
    span = max(clocks)
    return Simulation(span, [1 - b / span for b in busy], [peak_in_flight(ops) for ops in plans])
