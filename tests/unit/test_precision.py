"""The loss scale's rules, the guard's weights and clip, the refused combinations, and
PyTorch's memory format (no Horovod job)."""

from __future__ import annotations

import math
import re

import pytest

from hvdkit.errors import UserError
from hvdkit.layout import ParallelLayout
from hvdkit.parallel.loss_scale import LossScale, StepGuard
from hvdkit.recipe import recipe_from_dict


def recipe(train: dict | None = None, optimizer: dict | None = None, **parallel: object):
    return recipe_from_dict({
        "name": "t", "model": {"name": "mlp"}, "data": {"name": "digits"},
        "optimizer": {"name": "sgd", **(optimizer or {})}, "train": train or {},
        "parallel": parallel})


def test_overflow_skips_and_halves_then_growth_doubles() -> None:
    scale = LossScale(scale=1024.0, growth_steps=3)
    assert scale.update(False) is False and scale.scale == 512.0 and scale.skipped == 1
    assert [scale.update(True) for _ in range(2)] == [True, True] and scale.scale == 512.0
    assert scale.update(True) and scale.scale == 1024.0 and scale.good_steps == 0
    scale.update(True)
    scale.update(False)  # an overflow restarts the count of good steps
    assert scale.scale == 512.0 and scale.good_steps == 0 and scale.skipped == 2


def test_loss_scale_state_round_trips() -> None:
    scale = LossScale(scale=2.0 ** 20, growth_steps=5)
    for finite in (False, True, True):
        scale.update(finite)
    copy = LossScale()
    copy.load_state(scale.state())
    assert copy.state() == scale.state() == {"scale": 2.0 ** 19, "good_steps": 2, "skipped": 1}


def test_guard_only_where_needed_and_its_weights() -> None:
    assert StepGuard.plan(recipe(), replicas=2, sharded=False) is None
    assert StepGuard.plan(recipe({"precision": "bf16"}), replicas=2, sharded=False) is None
    ring = StepGuard.plan(recipe(optimizer={"clip_norm": 1.0}), replicas=4, sharded=False,
                          tied_holders={3: 2})
    assert ring is not None and ring.loss_scale is None and ring.scale == 1.0
    assert ring.weight(0) == 0.25 and ring.weight(3) == 0.125  # replicas, then stages
    zero = StepGuard.plan(recipe({"precision": "fp16", "loss_scale": 8.0}), replicas=4,
                          sharded=True)
    assert zero is not None and zero.weight(0) == 1.0 and zero.scale == 8.0


def test_clip_coefficient_is_torchs() -> None:
    guard = StepGuard(None, clip_norm=1.0, copies=1)
    assert guard.clip_coefficient(0.25) == 1.0  # under the clip
    assert guard.clip_coefficient(16.0) == pytest.approx(1.0 / (4.0 + 1e-6))
    assert StepGuard(None, clip_norm=0.0, copies=1).clip_coefficient(math.inf) == 1.0


@pytest.mark.parametrize(("train", "optimizer", "parallel", "field"), [
    ({"precision": "fp16"}, {}, {"sync": "ps"}, "train.precision fp16"),
    ({}, {"clip_norm": 1.0}, {"compression": "powersgd"}, "optimizer.clip_norm"),
    ({"compile": True}, {}, {"stages": 2, "schedule": "zb-h1"}, "train.compile"),
])
def test_combinations_that_cannot_work_are_one_line(train, optimizer, parallel, field) -> None:
    with pytest.raises(UserError, match=re.escape(field)) as error:
        ParallelLayout.from_recipe(recipe(train, optimizer, **parallel), world_size=2)
    assert "\n" not in str(error.value)


def test_recipe_checks_the_new_fields() -> None:
    with pytest.raises(UserError, match=r"optimizer\.clip_norm"):
        recipe(optimizer={"clip_norm": -1.0})
    with pytest.raises(UserError, match=r"train\.loss_scale"):
        recipe({"loss_scale": 0.0})
    with pytest.raises(UserError, match=r"train\.precision"):
        recipe({"precision": "fp8"})


def test_torch_memory_format_auto_is_contiguous_on_cpu_and_channels_last_on_request() -> None:
    torch = pytest.importorskip("torch")
    from hvdkit.adapters.torch.models import ChannelsFirst
    from hvdkit.adapters.torch.precision import memory_format, prepare

    assert memory_format("auto", torch.device("cpu")) is torch.contiguous_format
    assert memory_format("auto", torch.device("cuda", 0)) is torch.channels_last
    model = torch.nn.Sequential(ChannelsFirst(), torch.nn.Conv2d(3, 8, 3))
    x = torch.randn(2, 5, 5, 3)  # stored NHWC, as hvdkit's batches are
    before = model(x)
    assert before.is_contiguous()
    (call,) = prepare([model], torch.device("cpu"), "channels_last", compile=False)
    after = call(x)
    assert after.is_contiguous(memory_format=torch.channels_last)  # the convolution ran NHWC
    assert torch.allclose(after, before, atol=1e-6)
    after.sum().backward()
    # Horovod's broadcast and allreduce take contiguous tensors only
    assert all(p.is_contiguous() and p.grad.is_contiguous() for p in model.parameters())
