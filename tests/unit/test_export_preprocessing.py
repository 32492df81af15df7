"""preprocessing.json and the README's code, without a model: for every data kind whose test data
the README reads (image folders with and without val/, WebDataset shards, digits, npy arrays
uint8 and float, text), the README's preprocessing and test-data blocks, run on the raw files,
give the inputs and labels hvdkit's own test split hands the model (the images decoded to the
same pixels, JPEGs at a reduced DCT scale included). The export tests run the same blocks
with the models (tests/integration/test_export.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hvdkit import recipe_from_dict
from hvdkit.data.builder import build_source
from hvdkit.data.images import IMAGENET_MEAN, IMAGENET_STD, normalize
from hvdkit.data.sample_images import write_image_folder, write_shards
from hvdkit.models.usermodel import model_input_shape
from hvdkit.training.export_readme import code_blocks, export_readme, python_blocks
from hvdkit.training.preprocessing import preprocessing_spec


def image_folder(root: Path, val: bool) -> Path:
    # 160x120 images at image_size 32: the center crop's JPEGs decode at 3/8 scale.
    return write_image_folder(root, classes=2, train_per_class=5, val_per_class=3 if val else 0,
                              size=(160, 120), png_every=3, corrupt=False)


def cases(tmp: Path) -> dict[str, tuple[dict, str, bool]]:
    """name: (data section, framework, model.channels_first)."""
    folder = image_folder(tmp / "folder", val=True)
    loose = image_folder(tmp / "loose", val=False)
    write_shards(folder, tmp / "shards", per_shard=4)
    write_shards(folder, tmp / "shards", per_shard=4, split="val")
    rng = np.random.default_rng(0)
    (tmp / "u8").mkdir()
    np.save(tmp / "u8" / "x_train.npy", rng.integers(0, 256, (30, 5, 4, 3), dtype=np.uint8))
    np.save(tmp / "u8" / "y_train.npy", rng.integers(0, 3, (30, 1)))
    (tmp / "f32").mkdir()
    for part, n in (("train", 20), ("test", 7)):
        np.save(tmp / "f32" / f"x_{part}.npy", rng.standard_normal((n, 6)).astype(np.float64))
        np.save(tmp / "f32" / f"y_{part}.npy", rng.integers(0, 2, n))
    (tmp / "text.txt").write_text("héllo, wörld: some text to cut in windows " * 20)
    image = {"name": "images", "image_size": 32}
    return {
        "image folder, val/, NCHW": ({**image, "path": str(folder)}, "torch", True),
        "image folder, held out": ({**image, "path": str(loose / "train")}, "tensorflow", False),
        "image folder, augment none": ({**image, "path": str(folder), "augment": "none"},
                                       "torch", False),
        "webdataset, val shards": ({"name": "webdataset", "image_size": 32,
                                    "path": str(tmp / "shards" / "train-{000000..000002}.tar"),
                                    "val_path": str(tmp / "shards")}, "torch", True),
        "webdataset, held out": ({"name": "webdataset", "image_size": 32, "test_fraction": 0.3,
                                  "path": str(tmp / "shards" / "train-*.tar")}, "tensorflow",
                                 False),
        "digits": ({"name": "digits"}, "tensorflow", False),
        "npy uint8, held out": ({"name": "npy", "path": str(tmp / "u8")}, "torch", True),
        "npy float, test files": ({"name": "npy", "path": str(tmp / "f32")}, "torch", False),
        "text": ({"name": "text", "path": str(tmp / "text.txt"), "block_size": 8,
                  "test_fraction": 0.3}, "torch", False),
    }


CASES = ["image folder, val/, NCHW", "image folder, held out", "image folder, augment none",
         "webdataset, val shards", "webdataset, held out", "digits", "npy uint8, held out",
         "npy float, test files", "text"]


def canonical(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y in an order fixed by their values (digits' test set is in permutation order)."""
    keys = np.column_stack([x.reshape(len(x), -1), y.reshape(len(y), -1)]).T
    order = np.lexsort(keys)
    return x[order], y[order]


@pytest.mark.parametrize("name", CASES)
def test_readme_preprocessing_gives_the_inputs_of_the_runs_test_split(tmp_path: Path,
                                                                     name: str) -> None:
    data_section, framework, channels_first = cases(tmp_path)[name]
    model = {"name": "cnn"} if data_section["name"] != "text" else {"name": "gpt",
                                                                    "block_size": 8}
    recipe = recipe_from_dict({"name": "t", "model": {**model, "channels_first": channels_first},
                               "data": data_section, "optimizer": {"name": "sgd", "lr": 0.1}})
    data = build_source(recipe.data, recipe.train.seed)
    shape = model_input_shape(data.input_shape, channels_first, framework)
    spec = preprocessing_spec(recipe, data, framework, shape, "logits", ["model.pt2"])
    export = tmp_path / "export"
    export.mkdir()
    (export / "preprocessing.json").write_text(json.dumps(spec))
    readme = export_readme(spec, export, recipe.name)
    blocks = code_blocks(spec, export)
    assert python_blocks(readme) == blocks

    namespace: dict = {}
    exec(blocks[0] + blocks[2], namespace)  # preprocessing and the test data, no model
    batches = list(namespace["test_batches"](n=4))
    raw = np.concatenate([b[0] for b in batches])
    got = np.concatenate([namespace["preprocess"](b[0]) for b in batches])
    labels = np.concatenate([b[1] for b in batches])

    x, y = data.test.take(np.arange(len(data.test)))  # what hvdkit's test split hands over
    if data.normalization is not None:  # images: uint8 as decoded, the same pixels
        assert spec["image"]["size"] == 32 and spec["scale"] == 1 / 255
        assert spec["mean"] == list(IMAGENET_MEAN) and spec["std"] == list(IMAGENET_STD)
        assert raw.dtype == np.uint8 and np.array_equal(raw, x)
        x = normalize(x, data.normalization)
    if spec["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    assert spec["layout"] == ("NCHW" if channels_first else
                              "NHWC" if x.ndim == 4 else None)
    assert got.dtype == x.dtype == np.dtype(spec["dtype"])
    assert list(got.shape[1:]) == spec["input_shape"]
    got, labels = canonical(got, labels)
    x, y = canonical(x, y)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(got, x, rtol=1e-6, atol=2e-6)
    assert spec["classes"] == data.class_names
    assert spec["output"]["shape"][-1] == data.num_classes


def test_a_run_without_test_files_documents_its_raw_inputs(tmp_path: Path) -> None:
    recipe = recipe_from_dict({"name": "t", "model": {"name": "mlp"},
                               "data": {"name": "synthetic", "samples": 64, "shape": [4]},
                               "optimizer": {"name": "sgd", "lr": 0.1}})
    data = build_source(recipe.data, recipe.train.seed)
    spec = preprocessing_spec(recipe, data, "tensorflow", (4,), "logits", ["saved_model"])
    assert spec["test_data"] is None and spec["scale"] is None and spec["layout"] is None
    assert "synthetic" in spec["raw_input"]
    readme = export_readme(spec, tmp_path, recipe.name)
    assert "model.serve(x)" in readme and "x_raw, y = ..., ..." in readme
