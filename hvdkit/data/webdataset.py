"""Images in WebDataset tar shards: each sample KEY.jpg (or .jpeg, .png) with KEY.cls, its class.

    data: {name: webdataset, path: "shards/train-{000000..000127}.tar", image_size: 224}

`data.path` (and `data.val_path`, the test shards; without it a fixed `test_fraction` of the
training samples is held out) is a brace pattern (`{000000..000127}`, `{a,b}`), a glob, a
folder of .tar files, or a list of these. A sample's key is its member name up to the first
dot of the file name, as the WebDataset convention has it; .cls holds the class as a decimal
integer.

Each shard's headers are read once at start (a 512-byte read a member, ~3 µs: 10 s for
ImageNet's 2.5 million members) into an index of where each image lies; a batch then reads
its images by offset (`os.pread`). So the shards are read like the image folder, through the
same decoding, augmentation and workers (hvdkit.data.images), and keep the loader's exact
position semantics: the epoch's order is one sequence of global samples, computed alike on
every rank, cut into global batches that the ranks split. What the shards change is that
order: each epoch takes the shards in a seeded order, in groups of `data.shard_group`, and
shuffles the samples of a group together, so at any time the job reads from one group of
shards and each shard is read once an epoch. Resume (at any np) and elastic runs go on from
the exact global sample. What this does not do: stream shards from a pipe or object store
(they must be seekable files), or shuffle across groups (write shards shuffled, as
WebDataset advises; shard_group: 0 shuffles all samples together).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np

from hvdkit.config import DataConfig
from hvdkit.data.datasets import DATASETS, check_labels, holdout, resolve_classes
from hvdkit.data.images import IMAGE_SUFFIXES, image_source
from hvdkit.data.samples import DataSource
from hvdkit.errors import UserError

BLOCK = 512
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def expand(pattern: str) -> list[str]:
    """Brace expansion: `{000..127}` (zero-padded as written) and `{a,b}`, any number."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    span = _RANGE.match(body)
    if span:
        first, last = span.group(1), span.group(2)
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        step = 1 if int(last) >= int(first) else -1
        items = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        items = body.split(",")
    return [p for item in items for p in expand(head + item + tail)]


def shard_paths(spec: str | list[str], key: str) -> list[Path]:
    """The shard files `spec` names (see the module doc), each one checked to exist."""
    specs = spec if isinstance(spec, list) else [spec]
    found: list[Path] = []
    for pattern in specs:
        path = Path(pattern).expanduser()
        if path.is_dir():
            tars = sorted(path.glob("*.tar"))
            if not tars:
                raise UserError(f"{key}: folder {path} holds no .tar shards")
            found += tars
            continue
        names = [n for p in expand(str(path)) for n in
                 (sorted(glob.glob(p)) if glob.has_magic(p) else [p])]
        missing = [n for n in names if not os.path.isfile(n)]
        if len(missing) == len(names):
            raise UserError(f"{key}: {pattern} matches no file")
        if missing:
            raise UserError(f"{key}: {pattern}: {len(missing)} of its {len(names)} shards do "
                            f"not exist, the first {missing[0]}")
        found += [Path(n) for n in names]
    if not found:
        raise UserError(f"{key}: no shards given")
    return found


def _number(field: bytes) -> int:
    """A tar header's numeric field: octal text, or base-256 (GNU, large files)."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def _pax_path(data: bytes) -> str | None:
    for record in data.split(b"\n"):
        _, _, keyvalue = record.partition(b" ")
        name, _, value = keyvalue.partition(b"=")
        if name == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


def _members(path: Path):
    """(name, data offset, size) of each regular file in an uncompressed tar."""
    size_total = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, long_name = 0, None
        while offset + BLOCK <= size_total:
            header = os.pread(fd, BLOCK, offset)
            if header == bytes(BLOCK):
                return
            stored = _number(header[148:156])
            if stored != sum(header[:148]) + 256 + sum(header[156:]):
                raise UserError(f"data: {path} is not a tar file (bad header at byte {offset}; "
                                f"compressed shards are not read: use plain .tar)")
            kind, size = header[156:157], _number(header[124:136])
            data_at = offset + BLOCK
            offset = data_at + (size + BLOCK - 1) // BLOCK * BLOCK
            if kind in (b"L", b"x"):  # the next member's long name (GNU) or pax attributes
                data = os.pread(fd, size, data_at)
                long_name = (data.rstrip(b"\0").decode("utf-8", "surrogateescape")
                             if kind == b"L" else _pax_path(data) or long_name)
                continue
            name = long_name or _header_name(header)
            long_name = None
            if kind in (b"0", b"\0", b"7"):
                yield name, data_at, size
    finally:
        os.close(fd)


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[345] != 0:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _split_key(name: str) -> tuple[str, str]:
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(folder, stem), ext.lower() if dot else ""


def index_shards(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(shard, offset, size, label) of every sample of the shards, in shard and member order."""
    image_exts = {s[1:] for s in IMAGE_SUFFIXES}
    columns: list[list[int]] = [[], [], [], []]
    for shard, path in enumerate(paths):
        samples: dict[str, list[int]] = {}  # key -> [offset, size, label]
        labels: dict[str, int] = {}
        with open(path, "rb") as f:
            for name, offset, size in _members(path):
                key, ext = _split_key(name)
                if ext in image_exts and key not in samples:
                    samples[key] = [offset, size]
                elif ext == "cls":
                    f.seek(offset)
                    text = f.read(size).strip()
                    try:
                        labels[key] = int(text)
                    except ValueError:
                        raise UserError(f"{path}: {name} holds {text[:20]!r}, not a class "
                                        f"id (a decimal integer)") from None
        if not samples:
            raise UserError(f"data: shard {path} has no .jpg, .jpeg or .png members "
                            f"(WebDataset samples are KEY.jpg with KEY.cls)")
        for key, (offset, size) in samples.items():
            if key not in labels:
                raise UserError(f"{path}: sample {key} has no .cls member (its class id)")
            for column, value in zip(columns, (shard, offset, size, labels[key]), strict=True):
                column.append(value)
    return tuple(np.asarray(c, dtype=np.int64) for c in columns)  # type: ignore[return-value]


class TarStore:
    """Images inside tar shards, read by offset."""

    def __init__(self, paths: list[Path], shard: np.ndarray, offset: np.ndarray,
                 size: np.ndarray) -> None:
        self.paths = [str(p) for p in paths]
        self.shard, self.offset, self.size = shard, offset, size

    def __len__(self) -> int:
        return len(self.shard)

    def read(self, i: int) -> bytes:
        fd = os.open(self.paths[self.shard[i]], os.O_RDONLY)
        try:
            return os.pread(fd, int(self.size[i]), int(self.offset[i]))
        finally:
            os.close(fd)

    def name(self, i: int) -> str:
        path = self.paths[self.shard[i]]
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                member = _header_name(os.pread(fd, BLOCK, int(self.offset[i]) - BLOCK))
            finally:
                os.close(fd)
        except OSError:
            member = f"the member at byte {self.offset[i]}"
        return f"{path}:{member}"


@DATASETS.register("webdataset")
def webdataset(config: DataConfig, seed: int) -> DataSource:
    """WebDataset tar shards of images and classes (the module doc)."""
    train_paths = shard_paths(config.path, "data.path")
    shard, offset, size, label = index_shards(train_paths)
    paths = list(train_paths)
    if config.val_path:
        val_paths = shard_paths(config.val_path, "data.val_path")
        v_shard, v_offset, v_size, v_label = index_shards(val_paths)
        n_train = len(shard)
        shard = np.r_[shard, v_shard + len(paths)]
        offset, size, label = np.r_[offset, v_offset], np.r_[size, v_size], np.r_[label, v_label]
        paths += val_paths
        train_at, test_at = np.arange(n_train), np.arange(n_train, len(shard))
    else:
        if len(shard) < 2:
            raise UserError(f"data.path: {config.path} holds one sample; it cannot be split "
                            f"into training and test")
        train_at, test_at = holdout(len(shard), config.test_fraction)
    classes = resolve_classes(config.classes, label, f"data.path {config.path}")
    check_labels(label, classes, f"data: the .cls members of {config.path}")
    store = TarStore(paths, shard, offset, size)
    where = str(config.path if isinstance(config.path, str) else config.path[0])
    return image_source(store, (train_at, label[train_at]), (test_at, label[test_at]),
                        classes, config, seed, where, shards=shard[train_at])
