"""The ranks' stop agreement without a Horovod job: when checks fall, what they carry, and the
progress and epoch records of a run cut short. Sums over "ranks" are made by hand here, as the
trainer's allreduce would make them."""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest

from hvdkit.runtime.stop import StepBoundaryStop
from hvdkit.training.callbacks import ProgressBar


def ranks(n: int, every_s: float = 1.0) -> list[StepBoundaryStop]:
    stops = [StepBoundaryStop(is_root=i == 0, every_s=every_s) for i in range(n)]
    for stop in stops:
        stop.job = None  # no launcher's job folder in a unit test
    return stops


def agree(stops: list[StepBoundaryStop]) -> list[bool]:
    totals = np.sum([s.payload() for s in stops], axis=0)
    return [s.agree(totals) for s in stops]


def test_checks_come_every_step_until_the_step_time_is_known_then_about_once_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("hvdkit.runtime.stop.time.perf_counter", lambda: clock[0])
    stops = ranks(2, every_s=1.0)
    for stop in stops:
        stop.restart()
    assert [s.after_step() for s in stops] == [True, True]  # the first step: check
    clock[0] += 0.25  # a step of 0.25 s
    assert agree(stops) == [False, False]
    assert [s.interval for s in stops] == [4, 4]  # 4 steps ≈ 1 s
    due = [[s.after_step() for s in stops] for _ in range(4)]
    assert due == [[False, False]] * 3 + [[True, True]]
    clock[0] += 4 * 3.0  # then slow steps of 3 s: every step
    agree(stops)
    assert [s.interval for s in stops] == [1, 1]


def test_one_ranks_signal_stops_every_rank_and_sigterm_wins() -> None:
    stops = ranks(3)
    for stop in stops:
        stop.after_step()
    assert agree(stops) == [False] * 3
    stops[2].received = signal.SIGINT
    stops[1].received = signal.SIGTERM
    for stop in stops:
        stop.after_step()
    assert agree(stops) == [True] * 3
    assert {s.signum for s in stops} == {signal.SIGTERM}


def test_uneven_steps_give_every_rank_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that ran out of data took fewer steps: the interval comes from the sums alone."""
    clock = [0.0]
    monkeypatch.setattr("hvdkit.runtime.stop.time.perf_counter", lambda: clock[0])
    stops = ranks(2)
    for stop in stops:
        stop.restart()
    for _ in range(3):
        stops[0].after_step()
    stops[1].after_step()
    clock[0] += 0.6
    agree(stops)  # 1.2 s over 4 steps: 0.3 s a step
    assert [s.interval for s in stops] == [3, 3]


def test_a_stopped_run_shows_the_step_reached_not_100_percent() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out)
    bar.on_train_begin({"total_steps": 44, "epochs": 2})
    bar.on_epoch_end(0, {"train_loss": 1.0, "samples_per_sec": 10.0, "step": 7,
                         "complete": False})
    bar.on_train_end({"interrupted": signal.SIGTERM, "steps": 7})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("cut short at step 7")
    assert lines[-1] == "[hvdkit] stopped at step 7/44 (16%)"
