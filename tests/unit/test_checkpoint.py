"""Checkpoint files without a Horovod job: atomic write, keep-last-k, corruption detection,
fallback to the previous good checkpoint, refusal of another recipe's checkpoint, and of an
old (pickle) or crafted one without running what it carries."""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hvdkit import recipe_from_dict
from hvdkit.training.checkpoint import (
    LEGACY,
    MAGIC,
    CheckpointError,
    LegacyCheckpointError,
    checkpoint_path,
    list_checkpoints,
    load,
    load_latest,
    recipe_hash,
    refuse_old_format,
    resume_key,
    save,
)

ROOT = Path(__file__).resolve().parents[2]


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


class Marker:
    """Unpickling it creates the file `path`: what a crafted checkpoint could run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_raw(path: Path, magic: bytes, body: bytes) -> Path:
    """A checkpoint file with `magic` and a valid checksum and size of `body`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(body).hexdigest().encode()
    path.write_bytes(magic + digest + b" " + str(len(body)).encode() + b"\n" + body)
    return path


def legacy(directory: Path, step: int, marker: Path) -> Path:
    """A format 1 checkpoint, as hvdkit wrote them, whose pickle would create `marker`."""
    body = pickle.dumps({"step": step, "evil": Marker(marker)}, pickle.HIGHEST_PROTOCOL)
    return write_raw(checkpoint_path(directory, step), LEGACY, body)


def test_the_marker_pickle_runs_when_unpickled(tmp_path: Path) -> None:
    """The control: the crafted bodies below do run code when a pickle reads them."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Marker(marker)))
    assert marker.exists()


def crafted_bodies(marker: Path) -> dict[str, bytes]:
    npz = io.BytesIO()  # a format 2 archive whose array is a pickled object
    np.savez(npz, tree=np.frombuffer(b'{"array":0}', np.uint8),
             a0=np.array([Marker(marker)], dtype=object))
    return {"pickle": pickle.dumps(Marker(marker)), "object array": npz.getvalue()}


@pytest.mark.parametrize("kind", ["pickle", "object array"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "ran"
    path = write_raw(tmp_path / "ckpt-00000005.hvdk", MAGIC, crafted_bodies(marker)[kind])
    with pytest.raises(CheckpointError, match=r"ckpt-00000005\.hvdk is not a valid hvdkit "):
        load(path)
    assert not marker.exists()


def test_an_old_pickle_checkpoint_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = legacy(tmp_path, 5, marker)
    with pytest.raises(LegacyCheckpointError,
                       match=r"^checkpoint \S+ckpt-00000005\.hvdk is in hvdkit's old checkpoint "
                             r"format \(version 1, a Python pickle, which can run any code"):
        load(path)
    assert not marker.exists()


def test_a_folder_of_old_checkpoints_ends_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for step in (5, 10, 15):
        legacy(tmp_path / "checkpoints", step, marker)
    reports: list[str] = []
    with pytest.raises(LegacyCheckpointError) as caught:
        load_latest(tmp_path, recipe(), report=reports.append)
    assert reports == []  # no "trying the previous checkpoint" per file
    message = str(caught.value)
    assert "\n" not in message and "ckpt-00000015.hvdk (and 2 older ones there)" in message
    with pytest.raises(LegacyCheckpointError, match="and 2 older ones"):
        refuse_old_format(tmp_path)  # what `hvdkit train --resume` checks before a job
    assert not marker.exists()


def test_a_damaged_new_checkpoint_then_old_ones(tmp_path: Path) -> None:
    legacy(tmp_path, 5, tmp_path / "ran")
    newest = save(tmp_path, 10, payload(10), keep=0)
    newest.write_bytes(newest.read_bytes()[:100])
    refuse_old_format(tmp_path)  # the newest is of this format: the ranks verify it
    reports: list[str] = []
    with pytest.raises(LegacyCheckpointError,
                       match=r"no usable checkpoint .*ckpt-00000010\.hvdk is truncated.*; "
                             r"checkpoint \S+ckpt-00000005\.hvdk is in hvdkit's old"):
        load_latest(tmp_path, recipe(), report=reports.append)
    assert len(reports) == 1 and "truncated" in reports[0]
    refuse_old_format(tmp_path / "nowhere")  # not here: left to the ranks


def test_a_newer_format_is_named(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "ckpt-00000005.hvdk", b"HVDKIT-CHECKPOINT 3 ", b"{}")
    with pytest.raises(CheckpointError, match="checkpoint format 3, from a newer hvdkit; this "
                                              "one reads format 2"):
        load(path)


def hvdkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_refuses_an_old_checkpoint_in_one_line(tmp_path: Path) -> None:
    """`hvdkit train --resume` (before any rank starts) and `hvdkit export`: exit 2, one line."""
    marker = tmp_path / "ran"
    run = tmp_path / "old-run"
    old = legacy(run / "checkpoints", 40, marker)
    legacy(run / "checkpoints", 35, marker)
    trained = hvdkit("train", "recipes/digits_mlp.yaml", "-np", "2", "--run-dir",
                     str(tmp_path / "new"), "--resume", str(old))
    assert trained.returncode == 2, trained.stderr
    assert trained.stderr.count("\n") == 1 and "launching" not in trained.stderr
    assert trained.stderr.startswith(f"hvdkit: error: checkpoint {old} is in hvdkit's old "
                                     "checkpoint format (version 1, a Python pickle"), \
        trained.stderr
    assert not (tmp_path / "new").exists()

    recipe_dict = yaml.safe_load((ROOT / "recipes" / "digits_mlp.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe_dict,
                                                     "framework": "torch"}))
    exported = hvdkit("export", str(run))
    assert exported.returncode == 2 and exported.stderr.count("\n") == 1, exported.stderr
    assert f"checkpoint {old} (and 1 older one there) is in hvdkit's old" in exported.stderr
    assert not marker.exists()
