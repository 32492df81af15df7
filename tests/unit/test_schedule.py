"""Learning-rate schedule: linear scaling by workers, warm-up from the 1-worker rate, decay."""

import itertools

import pytest

from hvdkit.recipe import OptimizerConfig
from hvdkit.training.lr_schedule import learning_rate


def test_constant_without_scaling() -> None:
    config = OptimizerConfig(name="sgd", lr=0.1)
    assert learning_rate(config, 50, 10, 100, workers=4) == 0.1


def test_warmup_ramps_to_scaled_peak() -> None:
    config = OptimizerConfig(name="sgd", lr=0.1, scale_by_world=True, warmup_epochs=1)
    rates = [learning_rate(config, s, 10, 100, workers=4) for s in range(12)]
    assert rates[0] == pytest.approx(0.1 + 0.3 / 10)
    assert rates[9] == pytest.approx(0.4) and rates[11] == pytest.approx(0.4)
    assert all(a < b for a, b in itertools.pairwise(rates[:10]))


def test_cosine_ends_near_zero_and_step_decays() -> None:
    cosine = OptimizerConfig(name="sgd", lr=1.0, schedule="cosine")
    assert learning_rate(cosine, 0, 10, 100, 1) == pytest.approx(1.0)
    assert learning_rate(cosine, 99, 10, 100, 1) < 0.01
    step = OptimizerConfig(name="sgd", lr=1.0, schedule="step", step_every_epochs=2,
                           step_gamma=0.5)
    assert [learning_rate(step, s * 10, 10, 100, 1) for s in range(5)] == [1, 1, .5, .5, .25]
