"""`export/preprocessing.json`: what turns a run's raw inputs into what its exported model takes,
read off the run's data path (hvdkit.data), so that nobody has to guess it.

A raw batch becomes the model's input in this order (the README beside it has the code):

1. `image` (image files only): decode to RGB; center-crop and resize to size x size (below);
   uint8 (size, size, 3)
2. `scale`: x = x.astype(float32) * scale   (null: none)
3. `mean`, `std`: x = (x - mean) / std over the last (channel) axis   (null: none)
4. `layout`: "NCHW": x = x.transpose(0, 3, 1, 2); "NHWC": as is   (null: not images)
5. `dtype`: the model's input dtype (float32, or int64 token ids)

Fields: `format` (hvdkit-preprocessing/1), `framework`, `model_files` (written, the one to load
first first), `task` (classification | language_model), `raw_input` (what one raw sample is,
in words), `image` {size, resize ("center_crop": the shorter side to `resize_shorter_to`, the
center size x size; "whole": the whole image to size x size), resize_shorter_to,
interpolation (bilinear, antialiased: Pillow's), decode}, `scale`, `mean`, `std`, `layout`,
`dtype`, `input_shape` (one sample as the model takes it; the batch axis comes first, any
size), `output` {kind (logits | probabilities), shape (one sample's), prediction},
`num_classes`, `classes` (names, label i the i-th; null where the data names none) and
`test_data` (where the run's test samples are, null where hvdkit made them or a data.builder
gives them): {kind: image_folder | webdataset | digits | npy | token_file, ...}, with
`held_out` {fraction, seed} where the test set is a seeded share of the training samples:
`np.sort(np.random.default_rng(seed).permutation(n)[:min(max(1, round(n * fraction)), n - 1)])`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hvdkit.config import DataConfig, Recipe
from hvdkit.data.datasets import HOLDOUT_SEED
from hvdkit.data.imagecodec import RESIZE_FOR_CROP
from hvdkit.data.samples import DataSource

FORMAT = "hvdkit-preprocessing/1"
IMAGE_SOURCES = ("images", "webdataset")
DIGITS_LEVELS = 16
"""scikit-learn's digits are grey levels 0-16; hvdkit scales them to [0, 1]."""
TOKEN_DTYPES = {"text": "uint8", "tokens": "<u2"}


def preprocessing_spec(recipe: Recipe, data: DataSource, framework: str,
                       input_shape: tuple[int, ...], output_kind: str,
                       model_files: list[str]) -> dict[str, Any]:
    """The contents of preprocessing.json for a run of `recipe` on `data` (the module doc)."""
    config = recipe.data
    source = "" if config.builder else config.name
    images = data.normalization is not None
    tokens = data.input_dtype == "int64"
    raw = raw_dtype(data)
    if source == "digits":
        scale: float | None = 1 / DIGITS_LEVELS
    elif images or (raw == np.uint8 and not tokens):
        scale = 1 / 255
    else:
        scale = None
    mean, std = (list(v) for v in data.normalization) if images else (None, None)
    layout = None
    if len(data.input_shape) == 3 and not tokens:
        layout = "NHWC" if tuple(input_shape) == tuple(data.input_shape) else "NCHW"
    block = tuple(data.input_shape) if data.task == "language_model" else ()
    return {
        "format": FORMAT,
        "framework": framework,
        "model_files": model_files,
        "task": data.task,
        "raw_input": raw_input(config, data, raw),
        "image": image_spec(config) if source in IMAGE_SOURCES else None,
        "scale": scale,
        "mean": mean,
        "std": std,
        "layout": layout,
        "dtype": data.input_dtype,
        "input_shape": list(input_shape),
        "output": {
            "kind": output_kind,
            "shape": [*block, data.num_classes],
            "prediction": "argmax over the last axis: the class (label i is classes[i])"
                          if data.task == "classification" else
                          "argmax over the last axis: the next token at each position",
        },
        "num_classes": data.num_classes,
        "classes": data.class_names,
        "test_data": test_data(config, source),
    }


def raw_dtype(data: DataSource) -> np.dtype | None:
    """The dtype of the inputs as the source holds them, before hvdkit converts them."""
    split = data.test
    x = getattr(split, "x", None)
    if x is not None:
        return np.dtype(x.dtype)
    dataset, index = getattr(split, "dataset", None), getattr(split, "index", None)
    if dataset is not None and index is not None and len(index):
        return np.asarray(dataset[int(index[0])][0]).dtype
    return None


def raw_input(config: DataConfig, data: DataSource, raw: np.dtype | None) -> str:
    """One raw sample, in words."""
    shape = tuple(data.input_shape)
    if config.builder:
        what = f"dtype {raw}" if raw is not None else "as it yields them"
        return f"the inputs data.builder {config.builder!r} returns: shape {shape}, {what}"
    described = {
        "images": "an image file (JPEG or PNG)",
        "webdataset": "an image member (KEY.jpg, .jpeg or .png) of a WebDataset tar shard",
        "digits": "sklearn.datasets.load_digits().images[..., None]: 8x8 grey levels 0-16, "
                  "channels last",
        "synthetic": "hvdkit's generated Gaussian inputs (data.name synthetic), float32",
        "text": f"UTF-8 text: its bytes are the token ids, windows of {shape[0]} tokens",
        "tokens": f"uint16 token ids (a flat file), windows of {shape[0]} tokens",
        "npy": f"a row of the .npy inputs as stored: shape {shape}, dtype {raw}",
    }
    return described.get(config.name, f"a sample of data.name {config.name!r}: shape {shape}")


def image_spec(config: DataConfig) -> dict[str, Any]:
    """How an image file becomes uint8 (size, size, 3): hvdkit's test transform
    (hvdkit.data.imagecodec)."""
    size = config.image_size
    crop = config.augment == "imagenet"
    return {
        "size": size,
        "resize": "center_crop" if crop else "whole",
        "resize_shorter_to": round(size * RESIZE_FOR_CROP) if crop else None,
        "interpolation": "bilinear (Pillow's Image.BILINEAR, antialiased), one resize of the "
                         "crop's box in the decoded image",
        "decode": "RGB; a JPEG at the smallest DCT scale (1/2, 3/8, 1/4, 1/8: simplejpeg's "
                  "min_factor=2) that leaves the crop at least size pixels a side, else "
                  "Pillow's draft; other formats whole (Pillow)",
    }


def held_out(config: DataConfig) -> dict[str, Any]:
    return {"fraction": config.test_fraction, "seed": HOLDOUT_SEED}


def _paths(spec: str | list[str]) -> list[str]:
    return [str(Path(p).expanduser().resolve()) for p in
            (spec if isinstance(spec, list) else [spec])]


def test_data(config: DataConfig, source: str) -> dict[str, Any] | None:
    """Where the run's test samples are: files a user reads without hvdkit, or a rule."""
    if source == "digits":
        return {"kind": "digits", "held_out": held_out(config)}
    if source in TOKEN_DTYPES:
        return {"kind": "token_file", "path": _paths(config.path)[0],
                "dtype": TOKEN_DTYPES[source], "block_size": config.block_size,
                "test_fraction": config.test_fraction}
    if source == "npy":
        folder = Path(_paths(config.path)[0])
        if (folder / "x_test.npy").is_file():
            return {"kind": "npy", "x": str(folder / "x_test.npy"),
                    "y": str(folder / "y_test.npy"), "held_out": None}
        return {"kind": "npy", "x": str(folder / "x_train.npy"),
                "y": str(folder / "y_train.npy"), "held_out": held_out(config)}
    if source == "images":
        root = Path(_paths(config.path)[0])
        train = root / "train" if (root / "train").is_dir() else root
        if train != root and (root / "val").is_dir():
            return {"kind": "image_folder", "folder": str(root / "val"), "held_out": None}
        return {"kind": "image_folder", "folder": str(train), "held_out": held_out(config)}
    if source == "webdataset":
        from hvdkit.data.webdataset import shard_paths

        if config.val_path:
            shards = shard_paths(config.val_path, "data.val_path")
            return {"kind": "webdataset", "shards": _paths([str(p) for p in shards]),
                    "held_out": None}
        shards = shard_paths(config.path, "data.path")
        return {"kind": "webdataset", "shards": _paths([str(p) for p in shards]),
                "held_out": held_out(config)}
    return None
