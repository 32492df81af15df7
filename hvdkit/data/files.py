"""Data sets read from disk a batch at a time, never whole: npy, text and tokens.

    data: {name: npy, path: DIR}            x_train.npy, y_train.npy [, x_test.npy, y_test.npy]
    data: {name: text, path: FILE, block_size: N}                   UTF-8 text, byte tokens
    data: {name: tokens, path: FILE, vocab_size: V, block_size: N}  flat uint16 token ids

Every problem with the files is a one-line UserError naming the file, found here, before
training: the checks that read every value (UTF-8, token ids) scan the file in chunks, so a
rank never holds it whole (hvdkit.data.memory). Labels, one integer a sample, are read whole.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np

from hvdkit.config import DataConfig
from hvdkit.data.datasets import DATASETS, check_labels, check_pair, holdout, resolve_classes
from hvdkit.data.memory import DiskArray, open_npy
from hvdkit.data.samples import ArraySamples, DataSource, WindowSamples
from hvdkit.errors import UserError

TEXT_VOCAB = 256  # byte-level tokens
TOKEN_DTYPE = np.dtype("<u2")  # what nanoGPT's prepare scripts write (np.uint16, little-endian)


def existing(path: str, kind: str) -> Path:
    """`data.path` as a Path, which must exist as a `kind` ("folder" or "file")."""
    if not path:
        raise UserError(f"data.path is required: the {kind} that holds the data")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"data.path: {p} does not exist")
    if (kind == "folder") != p.is_dir():
        raise UserError(f"data.path: {p} is not a {kind}")
    return p


def _inputs(path: Path) -> DiskArray:
    try:
        x = open_npy(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npy file ({exc})") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{path}: inputs must be numbers (uint8 or float), got {x.dtype}")
    if len(x.shape) < 2:
        raise UserError(f"{path}: shape {x.shape} has no feature axis; inputs are "
                        f"(samples, features...) channels last")
    return x


def _labels(path: Path) -> np.ndarray:
    try:
        y = np.load(path, allow_pickle=False)  # one integer per sample: small, read whole
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npy file ({exc})") from None
    return y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y


@DATASETS.register("npy")
def npy(config: DataConfig, seed: int) -> DataSource:
    """x_train.npy / y_train.npy (and x_test.npy / y_test.npy, else test_fraction held out)."""
    folder = existing(config.path, "folder")
    names = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy")
    present = [(folder / n).is_file() for n in names]
    for name, here in zip(names[:2], present[:2], strict=True):
        if not here:
            raise UserError(f"data.path: {folder} has no {name}")
    if present[2] != present[3]:
        have, lack = (names[2], names[3]) if present[2] else (names[3], names[2])
        raise UserError(f"data.path: {folder} has {have} but no {lack}")
    x_train, y_train = _inputs(folder / names[0]), _labels(folder / names[1])
    check_pair(x_train, y_train, f"{folder}: x_train.npy and y_train.npy")
    classes = resolve_classes(config.classes, y_train, str(folder / names[1]))
    check_labels(y_train, classes, str(folder / names[1]))
    if present[2]:
        x_test, y_test = _inputs(folder / names[2]), _labels(folder / names[3])
        check_pair(x_test, y_test, f"{folder}: x_test.npy and y_test.npy")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise UserError(f"{folder}: x_test.npy samples have shape {x_test.shape[1:]}, "
                            f"x_train.npy samples {x_train.shape[1:]}")
        check_labels(y_test, classes, str(folder / names[3]))
        train = ArraySamples(x_train, y_train)
        test = ArraySamples(x_test, y_test)
    else:
        if len(y_train) < 2:
            raise UserError(f"{folder}: one sample cannot be split into training and test")
        train_at, test_at = holdout(len(y_train), config.test_fraction)
        train = ArraySamples(x_train, y_train, train_at)
        test = ArraySamples(x_train, y_train, test_at)
    return DataSource(train=train, test=test, task="classification",
                      input_shape=tuple(x_train.shape[1:]), input_dtype="float32",
                      num_classes=classes)


@DATASETS.register("text")
def text(config: DataConfig, seed: int) -> DataSource:
    """A UTF-8 text file as byte tokens (vocabulary 256), in block_size windows."""
    path = existing(config.path, "file")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"data.path: {path} is empty")
    tokens = DiskArray(path, np.uint8, (size,))
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    for chunk in tokens.chunks():
        try:
            decoder.decode(chunk.tobytes(), final=offset + len(chunk) == size)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text (byte {offset + exc.start} cannot be "
                            f"decoded)") from None
        offset += len(chunk)
    return _windows(tokens, config, TEXT_VOCAB)


@DATASETS.register("tokens")
def tokens(config: DataConfig, seed: int) -> DataSource:
    """A flat file of uint16 token ids (nanoGPT's train.bin), in block_size windows."""
    path = existing(config.path, "file")
    size = path.stat().st_size
    if size == 0 or size % TOKEN_DTYPE.itemsize:
        raise UserError(f"data.path: {path} holds {size} bytes, not a whole number of uint16 "
                        f"token ids (a multiple of 2)")
    if not config.vocab_size:
        raise UserError("data.vocab_size is required for tokens: ids lie in [0, vocab_size)")
    ids = DiskArray(path, TOKEN_DTYPE, (size // TOKEN_DTYPE.itemsize,))
    offset = 0
    for chunk in ids.chunks():
        high = int(chunk.max())
        if high >= config.vocab_size:
            at = offset + int(np.argmax(chunk >= config.vocab_size))
            raise UserError(f"{path}: token id {high} (at position {at}) is not below "
                            f"data.vocab_size {config.vocab_size}")
        offset += len(chunk)
    return _windows(ids, config, config.vocab_size)


def _windows(tokens: DiskArray, config: DataConfig, vocab: int) -> DataSource:
    """Training windows from the head, test windows from the held-out tail."""
    block = config.block_size
    if block < 1:
        raise UserError(f"data.block_size is required for {config.name}: tokens per window")
    n = len(tokens)
    split = n - round(n * config.test_fraction)
    train = WindowSamples(tokens, block, 0, split, vocab)
    test = WindowSamples(tokens, block, split, n, vocab)
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"{tokens.path}: {n} tokens are too few for windows of data.block_size "
                        f"{block} in both the training part and the held-out "
                        f"{config.test_fraction:g} (data.test_fraction)")
    return DataSource(train=train, test=test, task="language_model", input_shape=(block,),
                      input_dtype="int64", num_classes=vocab)
