"""Pipeline planning without a job: the stage splitter, layer timings, device names (the
schedules: test_schedules.py)."""

from __future__ import annotations

import time

import pytest

from hvdkit.errors import UserError
from hvdkit.parallel.pipeline import balanced_bounds, group_layers, layer_seconds, plan_stages
from hvdkit.runtime.devices import device_for


def test_balanced_split_minimises_the_largest_stage() -> None:
    assert balanced_bounds([1, 1, 1, 1], 2) == [0, 2, 4]
    assert balanced_bounds([8320, 8256, 650], 2) == [0, 1, 3]
    assert balanced_bounds([5, 1, 1, 1, 1, 1], 2) == [0, 1, 6]
    assert balanced_bounds([3, 3, 3], 3) == [0, 1, 2, 3]
    assert plan_stages([1, 2, 3, 4], 2).bounds == (0, 3, 4)


def test_layer_timings_survive_a_burst_of_load_and_the_first_calls() -> None:
    # Four equal 2 ms layers; each one's first call is slow (set-up), and a burst of load
    # slows three calls in a row by 30 ms. Timed one layer at a time (median of 5), the burst
    # would triple one layer and cut 1 | 3; interleaved, it slows one call of three layers.
    calls = {"n": 0}
    first = set()

    def layer(index: int):
        def work() -> None:
            calls["n"] += 1
            slow = 0.05 if index not in first else 0.03 if 10 <= calls["n"] < 13 else 0.0
            first.add(index)
            time.sleep(0.002 + slow)
        return work

    seconds = layer_seconds([layer(i) for i in range(4)])
    assert all(0.0015 < s < 0.01 for s in seconds), seconds
    assert calls["n"] >= 4 * (2 + 5)  # two untimed calls each, then at least 5 rounds
    assert balanced_bounds(seconds, 2) == [0, 2, 4]


def test_explicit_boundaries_and_their_errors() -> None:
    """The cut's rules live in the layout, which each rank asks with the built model's count."""
    from hvdkit.layout import ParallelLayout
    from hvdkit.recipe import recipe_from_dict

    assert plan_stages([1, 1, 1], 2, [2]).layers(1) == range(2, 3)

    def layout(**parallel: object) -> ParallelLayout:
        return ParallelLayout.from_recipe(recipe_from_dict({
            "model": {"builder": "m:f"}, "data": {"name": "digits"},
            "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"batch_size": 8},
            "parallel": parallel}), world_size=parallel.get("stages", 1))

    with pytest.raises(UserError, match="only 3 layers"):
        layout(stages=4, microbatches=2).check_cut(3)
    with pytest.raises(UserError, match="needs 1 entries"):
        layout(stages=2, microbatches=2, boundaries=[1, 2])
    with pytest.raises(UserError, match="rise strictly"):
        layout(stages=2, microbatches=2, boundaries=[3]).check_cut(3)
    with pytest.raises(ValueError):
        plan_stages([1, 1, 1], 4)


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
