"""The framework-free plans of ZeRO-1 (hvdkit.parallel.zero) and PowerSGD
(hvdkit.parallel.powersgd): buckets, shards, compression choices and byte counts."""

from __future__ import annotations

import numpy as np
import pytest

from hvdkit.parallel.powersgd import PowerSGDPlan
from hvdkit.parallel.zero import ShardPlan

SHAPES = [(64, 32), (32,), (32, 10), (10,), (3, 3, 1, 8), (8,)]


@pytest.mark.parametrize("ranks", [1, 2, 3, 5])
@pytest.mark.parametrize("bucket_bytes", [64, 1024, 2**20])
def test_shards_cover_every_element_once(ranks: int, bucket_bytes: int) -> None:
    plans = [ShardPlan(SHAPES, ranks, r, bucket_bytes) for r in range(ranks)]
    full = np.arange(plans[0].total, dtype=np.float32)
    shards = np.stack([p.shard(full) for p in plans])
    assert np.array_equal(plans[0].unshard(shards), full)
    seen = np.zeros(plans[0].total, int)
    for plan in plans:
        for piece in plan.pieces:
            start = plan.offsets[piece.param] + piece.param_offset
            seen[start:start + piece.size] += 1
            assert plan.buckets[piece.bucket].params.count(piece.param) == 1
    assert (seen == 1).all()
    # Every rank holds a shard of the same size, about 1/n of the whole.
    assert {p.shard_size for p in plans} == {plans[0].shard_size}
    padding = sum(b.padded - b.size for b in plans[0].buckets)
    assert plans[0].shard_size * ranks == plans[0].total + padding


def test_buckets_hold_whole_consecutive_parameters() -> None:
    plan = ShardPlan(SHAPES, 2, 0, bucket_bytes=4 * 1000)
    assert [i for b in plan.buckets for i in b.params] == list(range(len(SHAPES)))
    for bucket in plan.buckets:
        assert bucket.size <= 1000 or len(bucket.params) == 1  # a large one stands alone
        assert bucket.padded % 2 == 0 and bucket.padded - bucket.size < 2
    assert [b.params for b in plan.buckets] == [(0,), (1, 2, 3, 4, 5)]  # 2048 alone; 442


def test_split_gives_each_parameter_its_shape() -> None:
    plan = ShardPlan(SHAPES, 2, 1)
    parts = plan.split(np.arange(plan.total, dtype=np.float32))
    assert [p.shape for p in parts] == SHAPES
    assert parts[1][0] == 64 * 32


def test_bytes_per_step_is_a_ring_allreduce_without_compression() -> None:
    plan = ShardPlan([(100,), (28,)], 4, 0)  # 128 elements, no padding
    assert plan.bytes_per_step() == 128 * 3 // 4 * 8  # (n-1)/n of it, reduce-scatter + gather
    assert plan.bytes_per_step(wire_itemsize=2) == 128 * 3 // 4 * 6
    assert ShardPlan([(100,)], 1, 0).bytes_per_step() == 0


def test_shard_plan_rejects_a_bad_rank() -> None:
    with pytest.raises(ValueError):
        ShardPlan(SHAPES, 2, 2)


# PowerSGD

DIGITS_TORCH = [(128, 64), (128,), (64, 128), (64,), (10, 64), (10,)]


def test_powersgd_compresses_matrices_and_leaves_vectors() -> None:
    plan = PowerSGDPlan(DIGITS_TORCH, rank=2, ranks=2)
    assert [m.index for m in plan.matrices] == [0, 2, 4]
    assert plan.uncompressed == [1, 3, 5]
    assert plan.matrices[0].low_rank_size == (128 + 64) * 2
    # 17,226 numbers sent whole against 384 + 384 + 148 + 202 = 1,118 low-rank
    assert plan.elements_per_step(False) == 17226
    assert plan.elements_per_step(True) == 1118
    assert plan.compression_ratio() > 10
    assert plan.bytes_per_step(True) == 1118 * 4  # 2(n-1)/n = 1 at two ranks


def test_powersgd_reshapes_convolutions_and_skips_small_matrices() -> None:
    plan = PowerSGDPlan([(16, 8, 3, 3), (3, 3), (8, 1000), (4, 1000)], rank=2)
    shapes = {m.index: (m.rows, m.cols, m.rank) for m in plan.matrices}
    assert shapes == {0: (16, 72, 2), 2: (8, 1000, 2)}
    assert plan.uncompressed == [1, 3]  # they would not shrink twofold


def test_powersgd_warm_up_and_shared_initial_q() -> None:
    plan = PowerSGDPlan(DIGITS_TORCH, rank=2, warmup_steps=3)
    assert [plan.compressing(s) for s in range(5)] == [False, False, False, True, True]
    q = plan.initial_q(plan.matrices[0])
    assert q.shape == (64, 2) and q.dtype == np.float32
    again = PowerSGDPlan(DIGITS_TORCH, rank=2).initial_q(plan.matrices[0])
    assert np.array_equal(q, again)  # every rank draws the same
    assert not np.array_equal(q[:, 0], plan.initial_q(plan.matrices[1])[:, 0])


def test_powersgd_low_rank_step_in_numpy_recovers_a_low_rank_gradient() -> None:
    """The algorithm the adapters run, on one rank: a rank-2 gradient passes unchanged."""
    rng = np.random.default_rng(0)
    grad = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    plan = PowerSGDPlan([grad.shape], rank=2)
    q = plan.initial_q(plan.matrices[0])
    p, _ = np.linalg.qr(grad @ q)
    approx = p @ (grad.T @ p).T
    assert np.abs(approx - grad).max() < 1e-4


# The layout rules of the two options (hvdkit.layout), each one line naming the field.

def _recipe(**parallel: object):
    from hvdkit.recipe import recipe_from_dict

    return recipe_from_dict({"model": {"name": "mlp", "hidden": [16]},
                             "data": {"name": "digits"}, "optimizer": {"name": "adam"},
                             "parallel": parallel})


@pytest.mark.parametrize("parallel, elastic, message", [
    ({"sync": "zero1", "reduction": "adasum"}, False, "parallel.reduction adasum needs"),
    ({"compression": "powersgd", "sync": "zero1"}, False, "set parallel.sync allreduce"),
    ({"compression": "powersgd", "reduction": "adasum"}, False, "average or sum"),
    ({"compression": "powersgd", "powersgd_rank": 0}, False, "parallel.powersgd_rank"),
    ({"powersgd_warmup_steps": -1}, False, "parallel.powersgd_warmup_steps"),
    ({"sync": "zero1"}, True, "parallel.sync zero1 keeps per-rank state"),
    ({"compression": "powersgd"}, True, "parallel.compression powersgd keeps"),
    ({"sync": "none", "compression": "fp16"}, False, "parallel.sync none exchanges nothing"),
])
def test_layout_refuses_what_the_exchanges_cannot_do(parallel: dict, elastic: bool,
                                                     message: str) -> None:
    from hvdkit.errors import UserError
    from hvdkit.layout import ParallelLayout

    with pytest.raises(UserError, match=message):
        ParallelLayout.from_recipe(_recipe(**parallel), 2, controller="gloo", elastic=elastic)


def test_layout_takes_both_options_in_a_hybrid_pipeline() -> None:
    from hvdkit.layout import ParallelLayout

    for parallel in ({"sync": "zero1", "compression": "fp16"}, {"compression": "powersgd"}):
        layout = ParallelLayout.from_recipe(
            _recipe(stages=2, microbatches=2, **parallel), 4, controller="mpi")
        assert (layout.replicas, layout.powersgd_rank, layout.powersgd_warmup_steps) == \
            (2, 2, 10)


def test_sync_none_plans_no_exchange_at_any_size() -> None:
    from hvdkit.layout import ParallelLayout
    from hvdkit.parallel.exchange import plan_exchange

    for sync, kind in (("none", "none"), ("allreduce", "ring")):
        layout = ParallelLayout.from_recipe(_recipe(sync=sync), 4, controller="gloo")
        assert plan_exchange(layout, 3).kind == kind
