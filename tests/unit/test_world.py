"""Which device a rank trains on (train.device), before any framework is asked."""

from __future__ import annotations

import pytest

from hvdkit.errors import UserError
from hvdkit.runtime.world import pick_gpu


def test_cpu_and_auto_without_gpus_train_on_the_cpu() -> None:
    assert pick_gpu("cpu", 0, 1, gpus=4, shared_ok=False) is None
    assert pick_gpu("auto", 1, 2, gpus=0, shared_ok=False) is None


def test_each_rank_on_a_host_takes_its_own_gpu() -> None:
    assert [pick_gpu("auto", r, 4, gpus=4, shared_ok=False) for r in range(4)] == [0, 1, 2, 3]
    assert pick_gpu("gpu", 1, 2, gpus=8, shared_ok=False) == 1


def test_gpu_without_one_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="sees no GPU"):
        pick_gpu("gpu", 0, 1, gpus=0, shared_ok=True)


def test_more_ranks_than_gpus_only_where_sharing_is_allowed() -> None:
    with pytest.raises(UserError, match="NCCL needs a GPU per rank"):
        pick_gpu("auto", 1, 2, gpus=1, shared_ok=False)
    assert pick_gpu("auto", 1, 2, gpus=1, shared_ok=True) == 0


def test_ranks_given_their_own_gpus_take_the_first_they_see(monkeypatch) -> None:
    """SLURM --gpus-per-task: 4 ranks on a node, each seeing only its own GPU."""
    with pytest.raises(UserError, match="NCCL needs a GPU per rank"):
        pick_gpu("auto", 3, 4, gpus=1, shared_ok=False)
    monkeypatch.setenv("HVDKIT_OWN_GPUS", "1")
    assert pick_gpu("auto", 3, 4, gpus=1, shared_ok=False) == 0
    assert pick_gpu("auto", 3, 4, gpus=4, shared_ok=False) == 3  # tasks that see all GPUs
