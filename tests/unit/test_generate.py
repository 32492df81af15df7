"""Sampling the next token (hvdkit.training.generate), framework-free."""

from __future__ import annotations

import numpy as np
import pytest

from hvdkit.errors import UserError
from hvdkit.training.generate import generate, next_token


def test_temperature_zero_takes_the_most_likely_token() -> None:
    rng = np.random.default_rng(0)
    assert next_token(np.array([0.1, 3.0, -2.0, 2.9]), 0.0, rng) == 1


def test_samples_follow_the_softmax_of_logits_over_temperature() -> None:
    logits = np.log(np.array([0.1, 0.2, 0.7]))
    rng = np.random.default_rng(0)
    draws = np.bincount([next_token(logits, 1.0, rng) for _ in range(4000)], minlength=3)
    assert draws / 4000 == pytest.approx([0.1, 0.2, 0.7], abs=0.03)
    cold = np.bincount([next_token(logits, 0.25, rng) for _ in range(2000)], minlength=3)
    assert cold[2] / 2000 > 0.95  # p ∝ p**4: 0.7**4 / (0.1**4 + 0.2**4 + 0.7**4) = 0.997


def test_wrong_arguments_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="--prompt must not be empty"):
        generate(tmp_path, "")
    with pytest.raises(UserError, match="is not a run folder"):
        generate(tmp_path, "x")
