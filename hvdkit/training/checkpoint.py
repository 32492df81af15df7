"""Checkpoints: atomic save, keep the last k, verified load with fallback to an older one.

A checkpoint is one file, `<dir>/ckpt-<step>.hvdk`: a header line (format version, SHA-256
and size of the body), then the body, data only (hvdkit.training.safe_format: the arrays in an
.npz archive, the rest as JSON): the model and optimizer state from the step runner's
`state()` (hvdkit.parallel.step), the data position, the RNG states, the recipe and its hash.
Reading it never runs code. A format 1 file (a pickled body, which could run any code
when read) is refused with one line, never read.

Writing goes to a temporary file that is fsynced and then renamed, so a crash mid-write
leaves the previous checkpoints intact. A truncated or corrupted file fails its checksum;
`load_latest` then reports it and falls back to the newest older checkpoint that verifies.

Rank 0 alone writes; on resume rank 0 reads and the trainer broadcasts the payload.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.config import Recipe
from hvdkit.errors import UserError
from hvdkit.training import safe_format

FORMAT = 2
PREFIX = b"HVDKIT-CHECKPOINT "
MAGIC = PREFIX + f"{FORMAT} ".encode()
LEGACY = PREFIX + b"1 "  # a pickled body: refused unread
SUFFIX = ".hvdk"
_NAME = re.compile(r"^ckpt-(\d+)\.hvdk$")
# Fields a resumed run may change: those that do not change what a step computes, and the
# learning rate (applied from the next step on). The README lists them.
RESUMABLE_CHANGES = ("optimizer.lr", "train.epochs", "train.max_steps", "train.log_every_steps",
                     "train.eval_every_epochs", "train.threads", "train.checkpoint_every_steps",
                     "train.keep_checkpoints", "train.commit_every_steps",
                     "train.timing_warmup_steps", "train.device", "train.host_allocator",
                     # leave to run an emulated precision: the same numbers, only slower
                     "train.precision_force",
                     # where a pipeline cuts the model changes no number it computes
                     "parallel.split", "parallel.boundaries",
                     # who decodes the batches, and how far ahead, changes none either
                     "data.workers", "data.prefetch", "data.unreadable_limit")


class CheckpointError(UserError):
    """A checkpoint that cannot be used: unreadable, corrupted, of another format or recipe."""


class LegacyCheckpointError(CheckpointError):
    """A format 1 checkpoint: its body is a pickle, which could run code; never read."""


def legacy_message(path: Path, older: int = 0) -> str:
    """Why `path` (and `older` format 1 checkpoints beside it) is refused, in one line."""
    also = f" (and {older} older one{'s' if older > 1 else ''} there)" if older else ""
    return (f"checkpoint {path}{also} is in hvdkit's old checkpoint format (version 1, a "
            "Python pickle, which can run any code when it is read); this hvdkit no longer "
            "reads it: finish that run with the hvdkit that wrote it, or train it again")


def resume_key(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a flat dict without the fields a resumed run may change."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}.")
            elif name not in RESUMABLE_CHANGES:
                flat[name] = value

    walk(recipe.to_dict(), "")
    return flat


def recipe_hash(recipe: Recipe) -> str:
    """A short hash of `resume_key(recipe)`: equal hashes resume into the same computation."""
    return hashlib.sha256(repr(sorted(resume_key(recipe).items())).encode()).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """The host-side RNG states (Python, numpy); the adapter saves the framework's own."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:08d}{SUFFIX}"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save(directory: str | Path, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write `payload` atomically as the checkpoint of `step`; delete all but the newest `keep`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = safe_format.encode(payload)  # an unsupported value raises here, before any file
    header = MAGIC + hashlib.sha256(body).hexdigest().encode() + b" " + str(len(body)).encode()
    final = checkpoint_path(directory, step)
    temp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    with open(temp, "wb") as f:
        f.write(header + b"\n")
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, final)
    _fsync_dir(directory)
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | Path) -> dict[str, Any]:
    """Read and verify one checkpoint; `CheckpointError` says what is wrong with it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror}") from None
    header, _, body = data.partition(b"\n")
    _check_version(path, header)
    try:
        digest, size = header[len(MAGIC):].decode().split()
        expected_size = int(size)
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has a damaged header") from None
    if len(body) != expected_size:
        raise CheckpointError(f"checkpoint {path} is truncated "
                              f"({len(body)} of {expected_size} bytes)")
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupted (checksum mismatch)")
    try:
        payload = safe_format.decode(body)
    except safe_format.FormatError as exc:
        raise CheckpointError(f"checkpoint {path} is not a valid hvdkit checkpoint "
                              f"(its body: {exc})") from None
    if type(payload) is not dict:
        raise CheckpointError(f"checkpoint {path} is not a valid hvdkit checkpoint "
                              "(its body holds no payload)")
    return payload


def _check_version(path: Path, header: bytes) -> None:
    """Refuse a header of another format: format 1 (a pickle) unread, a newer one named."""
    if header.startswith(MAGIC):
        return
    if header.startswith(LEGACY):
        raise LegacyCheckpointError(legacy_message(path))
    version = header[len(PREFIX):].split(b" ", 1)[0] if header.startswith(PREFIX) else b""
    if version.isdigit() and int(version) > FORMAT:
        raise CheckpointError(f"checkpoint {path} is in checkpoint format {int(version)}, from "
                              f"a newer hvdkit; this one reads format {FORMAT}")
    raise CheckpointError(f"checkpoint {path} is not an hvdkit checkpoint")


def _head(path: Path) -> bytes:
    """The first bytes of `path`, enough for its format (nothing further is read)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC))
    except OSError:
        return b""


def refuse_old_format(source: str | Path) -> None:
    """Before a job starts: one line if resuming from `source` would reach a format 1
    checkpoint before any of this format. Reads only headers; a source not found here is
    left to the ranks (it may be on rank 0's host only)."""
    try:
        candidates = find(source)
    except CheckpointError:
        return
    for i, path in enumerate(candidates):
        head = _head(path)
        if head.startswith(LEGACY):
            raise LegacyCheckpointError(legacy_message(path, _legacy_after(candidates, i)))
        if head.startswith(MAGIC):
            return  # verified, with its fallbacks, on rank 0


def _legacy_after(candidates: list[Path], i: int) -> int:
    """How many of the checkpoints older than `candidates[i]` are format 1 too."""
    return sum(_head(p).startswith(LEGACY) for p in candidates[i + 1:])


def check_recipe(payload: dict[str, Any], recipe: Recipe, path: Path) -> None:
    """Refuse a checkpoint written by another recipe, naming the fields that differ."""
    if payload.get("recipe_hash") == recipe_hash(recipe):
        return
    saved: dict[str, Any] = payload.get("resume_key", {})
    now = resume_key(recipe)
    diffs = [f"{k}: {saved.get(k, '<absent>')!r} → {now.get(k, '<absent>')!r}"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    reason = "; ".join(diffs[:5]) or "the recipe hash differs"
    raise CheckpointError(f"checkpoint {path} was written by another recipe and cannot be "
                          f"resumed: {reason}")


def find(source: str | Path) -> list[Path]:
    """Candidate checkpoints, newest first: a file, a checkpoint folder, or a run folder."""
    source = Path(source)
    if source.is_file():
        return [source]
    for directory in (source / "checkpoints", source):
        found = list_checkpoints(directory)
        if found:
            return found[::-1]
    raise CheckpointError(f"no checkpoint found in {source}")


def load_latest(source: str | Path, recipe: Recipe,
                report: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint under `source` that verifies; each bad one is reported and skipped.

    A checkpoint of another recipe is never skipped silently: it ends the search with an error;
    so does one of format 1 (a pickle, never read), in one line however many there are.
    """
    report = report or (lambda message: print(message, file=sys.stderr, flush=True))
    errors = []
    candidates = find(source)
    for i, path in enumerate(candidates):
        try:
            payload = load(path)
        except LegacyCheckpointError:
            # Older ones are of that format too, most likely: one line, not one per file.
            message = legacy_message(path, _legacy_after(candidates, i))
            if errors:
                message = f"no usable checkpoint under {source}: {'; '.join(errors)}; {message}"
            raise LegacyCheckpointError(message) from None
        except CheckpointError as exc:
            report(f"hvdkit: {exc}; trying the previous checkpoint")
            errors.append(str(exc))
            continue
        check_recipe(payload, recipe, path)
        return path, payload
    raise CheckpointError(f"no usable checkpoint under {source}: {'; '.join(errors)}")


@dataclass
class Position:
    """Where training stands. `sample` counts global samples taken in the current epoch, so
    a position is valid at any number of ranks; `samples_seen` counts them over the run."""

    epoch: int = 0
    sample: int = 0
    step: int = 0
    samples_seen: int = 0

    def advance(self, samples: int) -> None:
        self.sample += samples
        self.samples_seen += samples
        self.step += 1

    def next_epoch(self) -> None:
        self.epoch += 1
        self.sample = 0


class Checkpointer:
    """The trainer's checkpoint hook: rank 0 saves every N steps and at the end; `restore`
    reads on rank 0 and broadcasts the payload, so every rank loads the same state."""

    def __init__(self, runner: Any, recipe: Recipe, directory: Path | None, is_root: bool,
                 framework: str) -> None:
        self.runner, self.recipe, self.directory = runner, recipe, directory
        self.is_root, self.framework = is_root, framework
        self.every = recipe.train.checkpoint_every_steps
        self.last_saved = -1

    def after_step(self, position: Position) -> None:
        if self.every and position.step % self.every == 0:
            self.save(position)

    def save(self, position: Position) -> Path | None:
        if self.directory is None or position.step == self.last_saved:
            return None
        self.runner.average_statistics()  # every rank: the one model that evaluations see
        if not (self.is_root or self.runner.collective_state):
            return None
        state = self.runner.state()  # on every rank where the runner gathers it to rank 0
        self.last_saved = position.step
        if not self.is_root:
            return None
        payload = {
            "format": FORMAT, "framework": self.framework, "position": asdict(position),
            "recipe_hash": recipe_hash(self.recipe), "resume_key": resume_key(self.recipe),
            "state": state, "rng": rng_state(), "saved_at": time.time(),
        }
        return save(self.directory, position.step, payload, self.recipe.train.keep_checkpoints)

    def restore(self, source: str | Path) -> tuple[Position, Path]:
        """Load the newest good checkpoint under `source` into every rank; its position."""
        found: Any = None
        if self.is_root:
            try:
                path, payload = load_latest(source, self.recipe)
                if payload.get("framework") != self.framework:
                    raise CheckpointError(f"checkpoint {path} was written by "
                                          f"{payload.get('framework')}, not {self.framework}")
                found = (str(path), payload)
            except CheckpointError as exc:
                found = exc
        found = self.runner.broadcast_object(found, root_rank=0, name="hvdkit.training.checkpoint")
        if isinstance(found, Exception):
            raise CheckpointError(str(found))
        path, payload = found
        self.runner.load_state(payload["state"])
        set_rng_state(payload["rng"])
        self.last_saved = payload["position"]["step"]
        return Position(**payload["position"]), Path(path)
