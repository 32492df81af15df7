"""Checkpoint files without a Horovod job: atomic write, keep-last-k, corruption detection,
fallback to the previous good checkpoint, and refusal of another recipe's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvdkit import recipe_from_dict
from hvdkit.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load,
    load_latest,
    recipe_hash,
    resume_key,
    save,
)


def recipe(**train: object):
    return recipe_from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
                             "optimizer": {"name": "adam", "lr": 0.002}, "train": train})


def payload(step: int, r=None) -> dict:
    r = r or recipe()
    return {"step": step, "weights": np.full(3, step, np.float32),
            "recipe_hash": recipe_hash(r), "resume_key": resume_key(r)}


def test_save_load_round_trip_and_no_temp_files(tmp_path: Path) -> None:
    path = save(tmp_path, 7, payload(7))
    assert path.name == "ckpt-00000007.hvdk"
    loaded = load(path)
    assert loaded["step"] == 7 and np.array_equal(loaded["weights"], [7, 7, 7])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temp file was renamed


def test_keeps_the_newest_k(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20, 100):
        save(tmp_path, step, payload(step), keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == \
        ["ckpt-00000015.hvdk", "ckpt-00000020.hvdk", "ckpt-00000100.hvdk"]


def test_a_crash_mid_write_leaves_the_previous_checkpoints(tmp_path: Path) -> None:
    save(tmp_path, 5, payload(5))
    (tmp_path / ".ckpt-00000010.hvdk.tmp-123").write_bytes(b"half a file")  # died mid-write
    path, loaded = load_latest(tmp_path, recipe())
    assert path.name == "ckpt-00000005.hvdk" and loaded["step"] == 5


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:-10] + bytes(10), "corrupted"),
    (lambda b: b"garbage" + b, "not an hvdkit checkpoint"),
])
def test_damage_is_detected(tmp_path: Path, damage, message: str) -> None:
    path = save(tmp_path, 5, payload(5))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_falls_back_to_the_previous_good_one_and_reports(tmp_path: Path) -> None:
    save(tmp_path, 5, payload(5))
    newest = save(tmp_path, 10, payload(10))
    newest.write_bytes(newest.read_bytes()[:100])
    reports: list[str] = []
    _, loaded = load_latest(tmp_path, recipe(), report=reports.append)
    assert loaded["step"] == 5
    assert len(reports) == 1 and "ckpt-00000010.hvdk is truncated" in reports[0]


def test_no_good_checkpoint_is_an_error(tmp_path: Path) -> None:
    newest = save(tmp_path, 10, payload(10))
    newest.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest(tmp_path, recipe(), report=lambda _: None)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_latest(tmp_path / "empty", recipe())


def test_another_recipe_is_refused_with_the_field_named(tmp_path: Path) -> None:
    save(tmp_path / "checkpoints", 5, payload(5))
    other = recipe_from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
                              "optimizer": {"name": "adam", "lr": 0.002, "weight_decay": 0.1}})
    with pytest.raises(CheckpointError,
                       match=r"another recipe.*optimizer\.weight_decay: 0\.0 → 0\.1"):
        load_latest(tmp_path, other)  # a run folder: looks in its checkpoints/


def test_length_logging_and_learning_rate_changes_may_resume() -> None:
    assert recipe_hash(recipe(epochs=1)) == recipe_hash(recipe(epochs=5, max_steps=3,
                                                               log_every_steps=1))
    faster = recipe_from_dict({**recipe().to_dict(), "optimizer": {"name": "adam", "lr": 0.1}})
    assert recipe_hash(faster) == recipe_hash(recipe())
    assert recipe_hash(recipe(batch_size=32)) != recipe_hash(recipe(batch_size=16))
