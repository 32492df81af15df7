"""Pipeline schedules without a job: each stage's op list, the simulator's deadlock check,
idle shares against the ideal formulas, peak activations, and message tags."""

from __future__ import annotations

import itertools

import pytest

from hvdkit.parallel.schedules import (
    Op,
    check_ops,
    global_chunk,
    ideal_bubble,
    message_tag,
    peak_in_flight,
    schedule,
    simulate,
)

CASES = [(p, m) for p in (2, 3, 4) for m in (p, 2 * p, 4 * p)]


def ops(text: str) -> list[Op]:
    """`F0 B1c1 W2` → [Op("F", 0), Op("B", 1, 1), Op("W", 2)]."""
    out = []
    for t in text.split():
        mb, _, chunk = t[1:].partition("c")
        out.append(Op(t[0], int(mb), int(chunk or 0)))
    return out


def test_gpipe_runs_all_forwards_then_all_backwards() -> None:
    assert schedule("gpipe", 0, 2, 3) == ops("F0 F1 F2 B0 B1 B2")


def test_1f1b_warms_up_then_alternates_then_cools_down() -> None:
    assert schedule("1f1b", 0, 2, 4) == ops("F0 F1 B0 F2 B1 F3 B2 B3")
    assert schedule("1f1b", 1, 2, 4) == ops("F0 B0 F1 B1 F2 B2 F3 B3")
    assert schedule("1f1b", 0, 4, 2) == ops("F0 F1 B0 B1")  # fewer micro-batches than stages


def test_interleaved_visits_each_chunk_in_groups_of_p() -> None:
    assert schedule("interleaved", 0, 2, 4, 2) == ops(
        "F0 F1 F0c1 F1c1 F2 B0c1 F3 B1c1 F2c1 B0 F3c1 B1 B2c1 B3c1 B2 B3")
    assert schedule("interleaved", 1, 2, 4, 2) == ops(
        "F0 F1 F0c1 B0c1 F1c1 B1c1 F2 B0 F3 B1 F2c1 B2c1 F3c1 B3c1 B2 B3")
    for stage, m in itertools.product(range(3), (3, 6)):  # one chunk each: 1F1B itself
        assert schedule("interleaved", stage, 3, m, 1) == schedule("1f1b", stage, 3, m)
    with pytest.raises(ValueError, match="multiple of stages"):
        schedule("interleaved", 0, 2, 3, 2)


def test_zb_h1_defers_weight_gradients_by_the_stage_index() -> None:
    assert schedule("zb-h1", 0, 2, 4) == ops("F0 F1 B0 W0 F2 B1 W1 F3 B2 W2 B3 W3")
    assert schedule("zb-h1", 1, 2, 4) == ops("F0 B0 F1 B1 W0 F2 B2 W1 F3 B3 W2 W3")
    assert schedule("zb-h1", 2, 3, 3) == ops("F0 B0 F1 B1 F2 B2 W0 W1 W2")


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb-h1"])
@pytest.mark.parametrize("stages,m", [(1, 1), (2, 1), (3, 2), (3, 5), (4, 8)])
def test_every_schedule_runs_each_op_once_in_order(name: str, stages: int, m: int) -> None:
    for stage in range(stages):
        check_ops(name, schedule(name, stage, stages, m), m)  # raises if not


def test_the_simulator_finds_deadlocks_and_check_ops_missing_ops() -> None:
    # Stage 0 waits for B0 before sending F1; stage 1 waits for F1 before running B0.
    with pytest.raises(RuntimeError, match="deadlocks"):
        simulate("1f1b", 2, 2, plans=[ops("F0 B0 F1 B1"), ops("F0 F1 B0 B1")])
    with pytest.raises(ValueError, match="once"):
        check_ops("zb-h1", ops("F0 B0"), 1)
    with pytest.raises(ValueError, match="out of order"):
        check_ops("zb-h1", ops("F0 W0 B0"), 1)


@pytest.mark.parametrize("stages,m", CASES)
def test_no_deadlock_and_the_ideal_idle_share(stages: int, m: int) -> None:
    """p ∈ {2, 3, 4}, m ∈ {p, 2p, 4p}, v ∈ {1, 2, 3}: each stage idles as the formula says."""
    for name, virtual in [("gpipe", 1), ("1f1b", 1), ("zb-h1", 1),
                          ("interleaved", 1), ("interleaved", 2), ("interleaved", 3)]:
        sim = simulate(name, stages, m, virtual)  # raises if the stages deadlock
        assert sim.idle == pytest.approx([ideal_bubble(name, stages, m, virtual)] * stages)
    assert ideal_bubble("zb-h1", stages, m) < ideal_bubble("1f1b", stages, m)
    assert ideal_bubble("interleaved", stages, m, 2) < ideal_bubble("1f1b", stages, m)


def test_the_ideal_formulas() -> None:
    assert ideal_bubble("1f1b", 2, 8) == pytest.approx(1 / 9)
    assert ideal_bubble("interleaved", 2, 8, 2) == pytest.approx(1 / 17)
    assert ideal_bubble("zb-h1", 2, 8) == pytest.approx(1 / 25)


@pytest.mark.parametrize("stages,m", CASES)
def test_peak_activations(stages: int, m: int) -> None:
    """1F1B: stage s holds p − s micro-batches; ZB-H1 never more than 1F1B's peak (p, on
    stage 0), though later stages hold more than under 1F1B until their deferred W's run;
    interleaved: one more than its (v − 1)·p + 2(p − s − 1) warm-ups, chunks of 1/v of a stage
    each: p + (p − 1)/v stages' worth on stage 0 (Megatron-LM's)."""
    one_f_one_b = simulate("1f1b", stages, m).peak
    assert one_f_one_b == [stages - s for s in range(stages)]
    assert simulate("gpipe", stages, m).peak == [m] * stages
    assert max(simulate("zb-h1", stages, m).peak) <= max(one_f_one_b)
    for v in (2, 3):
        assert simulate("interleaved", stages, m, v).peak == [
            min((v - 1) * stages + 2 * (stages - s - 1) + 1, m * v) for s in range(stages)]


def test_w_frees_the_activations_where_there_are_ws() -> None:
    assert peak_in_flight(ops("F0 F1 B0 F2 W0 B1 B2 W1 W2")) == 3
    assert peak_in_flight(ops("F0 F1 B0 F2 B1 B2")) == 2


def test_message_tags_are_unique_within_a_step() -> None:
    stages, m, v = 3, 6, 3
    boundaries = stages * v - 1
    tags = set()
    for stage in range(stages):
        for op in schedule("interleaved", stage, stages, m, v):
            c = global_chunk(op, stage, stages)
            if op.kind == "F" and c < boundaries:  # sends forward across boundary c + 1
                tags.add(message_tag(op.microbatch, c + 1, 0, boundaries))
            if op.kind == "B" and c > 0:  # sends its input's gradient back across boundary c
                tags.add(message_tag(op.microbatch, c, 1, boundaries))
    assert len(tags) == 2 * m * boundaries and max(tags) == 2 * m * boundaries - 1
