"""Pipeline planning without a job: schedules, the stage splitter, device names."""

from __future__ import annotations

import pytest

from hvdkit.errors import UserError
from hvdkit.parallel.pipeline import (
    Op,
    balanced_bounds,
    group_layers,
    ideal_bubble,
    peak_in_flight,
    plan_stages,
    schedule,
    simulate,
)
from hvdkit.parallel.placement import device_for


def ops(text: str) -> list[Op]:
    return [Op(t[0], int(t[1:])) for t in text.split()]


def test_gpipe_runs_all_forwards_then_all_backwards() -> None:
    assert schedule("gpipe", 0, 2, 3) == ops("F0 F1 F2 B0 B1 B2")


def test_1f1b_warms_up_then_alternates_then_cools_down() -> None:
    assert schedule("1f1b", 0, 2, 4) == ops("F0 F1 B0 F2 B1 F3 B2 B3")
    assert schedule("1f1b", 1, 2, 4) == ops("F0 B0 F1 B1 F2 B2 F3 B3")
    assert schedule("1f1b", 0, 4, 2) == ops("F0 F1 B0 B1")  # fewer micro-batches than stages


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages,m", [(1, 1), (2, 1), (2, 4), (3, 5), (4, 8)])
def test_every_schedule_runs_each_op_once_in_order(name: str, stages: int, m: int) -> None:
    for stage in range(stages):
        plan = schedule(name, stage, stages, m)
        assert sorted(plan) == sorted([Op("F", i) for i in range(m)] +
                                      [Op("B", i) for i in range(m)])
        assert all(plan.index(Op("F", i)) < plan.index(Op("B", i)) for i in range(m))


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages,m", [(2, 1), (2, 2), (2, 4), (2, 8), (4, 8)])
def test_simulated_bubble_is_the_textbook_one(name: str, stages: int, m: int) -> None:
    _, bubbles = simulate(name, stages, m)  # also raises if the schedules deadlock
    assert bubbles[0] == pytest.approx(ideal_bubble(stages, m))


def test_peak_activations_1f1b_at_most_stages_gpipe_m() -> None:
    for m in (1, 2, 4, 8):
        assert peak_in_flight(schedule("gpipe", 0, 2, m)) == m
        assert peak_in_flight(schedule("1f1b", 0, 2, m)) == min(2, m)
        assert peak_in_flight(schedule("1f1b", 0, 4, m)) == min(4, m)
        assert peak_in_flight(schedule("1f1b", 3, 4, m)) == 1


def test_balanced_split_minimises_the_largest_stage() -> None:
    assert balanced_bounds([1, 1, 1, 1], 2) == [0, 2, 4]
    assert balanced_bounds([8320, 8256, 650], 2) == [0, 1, 3]
    assert balanced_bounds([5, 1, 1, 1, 1, 1], 2) == [0, 1, 6]
    assert balanced_bounds([3, 3, 3], 3) == [0, 1, 2, 3]
    assert plan_stages([1, 2, 3, 4], 2).bounds == (0, 3, 4)


def test_explicit_boundaries_and_their_errors() -> None:
    assert plan_stages([1, 1, 1], 2, [2]).layers(1) == range(2, 3)
    with pytest.raises(UserError, match="only 3 layers"):
        plan_stages([1, 1, 1], 4)
    with pytest.raises(UserError, match="needs 1 entries"):
        plan_stages([1, 1, 1], 2, [1, 2])
    with pytest.raises(UserError, match="rise strictly"):
        plan_stages([1, 1, 1], 2, [3])


def test_parameter_free_layers_join_the_layer_before() -> None:
    # torch mlp: Flatten, Linear, ReLU, Linear, ReLU, Linear; keras: Flatten, Dense x3
    assert group_layers([False, True, False, True, False, True]) == [[0, 1, 2], [3, 4], [5]]
    assert group_layers([False, True, True, True]) == [[0, 1], [2], [3]]


def test_devices_translate_between_frameworks() -> None:
    assert device_for("cuda:1", "tensorflow") == "/GPU:1"
    assert device_for("/GPU:0", "torch") == "cuda:0"
    assert device_for("/CPU:0", "torch") == "cpu"
    with pytest.raises(UserError, match="unknown device"):
        device_for("tpu", "torch")


def test_shared_weights_are_the_ones_used_on_several_stages() -> None:
    from hvdkit.parallel.tied import shared_weights

    # A GPT cut in 3 stages: embeddings (weights 1, 2) and block on stage 0, a block on
    # stage 1, the head (final norm 9, tied weight 1) on stage 2.
    layers = [[1, 2], [3, 4], [5, 6], [9, 1]]
    assert shared_weights(layers, [0, 0, 1, 2]) == {1: (0, 2)}
    assert shared_weights(layers, [0, 0, 0, 0]) == {}
