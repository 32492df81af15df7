"""The data sources: npy (read from disk a batch at a time), text and tokens windows, your own
arrays and map-style data; each bad input is a one-line UserError naming the file or field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvdkit.data import Dataset, build_source, to_source
from hvdkit.data.checks import check_model_fits
from hvdkit.data.memory import DiskArray, open_npy
from hvdkit.errors import UserError
from hvdkit.launch.preflight import check_data
from hvdkit.recipe import recipe_from_dict


def _config(**data):
    return recipe_from_dict({"model": {"name": "mlp"}, "data": data,
                             "optimizer": {"name": "sgd"}}).data


def _npy(folder: Path, n: int = 50, test: int = 0, dtype=np.uint8, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for part, count in (("train", n), ("test", test)):
        if count:
            x = rng.integers(0, 256, (count, 4, 4, 2)).astype(dtype)
            np.save(folder / f"x_{part}.npy", x)
            np.save(folder / f"y_{part}.npy", rng.integers(0, classes, count))
    return folder


def _error(**data) -> str:
    with pytest.raises(UserError) as info:
        build_source(_config(**data), 0)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_npy_is_read_from_disk_and_uint8_is_scaled_per_batch(tmp_path: Path) -> None:
    folder = _npy(tmp_path / "d", n=40, test=10)
    data = build_source(_config(name="npy", path=str(folder)), 0)
    assert isinstance(data.train.x, DiskArray)
    assert (data.task, data.input_shape, data.input_dtype) == ("classification", (4, 4, 2),
                                                               "float32")
    assert data.num_classes == 1 + int(np.load(folder / "y_train.npy").max())
    x, y = data.train.take(np.array([3, 7]))
    raw = np.load(folder / "x_train.npy")
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x, raw[[3, 7]] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, np.load(folder / "y_train.npy")[[3, 7]])
    assert len(data.test) == 10


def test_npy_without_test_files_holds_out_a_fixed_share(tmp_path: Path) -> None:
    folder = _npy(tmp_path / "d", n=50, dtype=np.float32)
    data = build_source(_config(name="npy", path=str(folder), test_fraction=0.2), 0)
    assert (len(data.train), len(data.test)) == (40, 10)
    x_train, _ = data.train.take(np.arange(40))
    x_test, _ = data.test.take(np.arange(10))
    rows = {r.tobytes() for r in np.concatenate([x_train, x_test])}
    assert len(rows) == 50  # disjoint, and together the whole file
    again = build_source(_config(name="npy", path=str(folder), test_fraction=0.2), 5)
    np.testing.assert_array_equal(again.test.take(np.arange(10))[0], x_test)


def test_disk_array_reads_any_rows_and_spans(tmp_path: Path) -> None:
    path = tmp_path / "x_train.npy"
    np.save(tmp_path / "y_train.npy", np.zeros(5, dtype=np.int64))
    want = np.arange(5 * 3 * 2, dtype=np.float64).reshape(5, 3, 2)
    np.save(path, want)
    x = open_npy(path)
    for idx in ([0, 1, 2, 4], [4, 0, 3, 3], [], [2]):
        np.testing.assert_array_equal(x.gather(np.array(idx, dtype=int)), want[idx])
    np.testing.assert_array_equal(x.spans(np.array([0, 3]), 2), want[[[0, 1], [3, 4]]])
    assert sum(len(c) for c in x.chunks()) == 5
    with pytest.raises(IndexError):
        x.gather(np.array([5]))
    np.save(path, np.asfortranarray(want))
    with pytest.raises(UserError, match="Fortran order"):
        build_source(_config(name="npy", path=str(tmp_path)), 0)


def test_text_windows_are_bytes_with_targets_shifted_by_one(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    text = "héllo wörld, " * 40
    path.write_text(text, encoding="utf-8")
    data = build_source(_config(name="text", path=str(path), block_size=8,
                                test_fraction=0.25), 0)
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    assert (data.task, data.num_classes, data.vocab_size) == ("language_model", 256, 256)
    assert data.input_shape == (8,) and data.input_dtype == "int64"
    x, y = data.train.take(np.array([0, 2]))
    np.testing.assert_array_equal(x[1], raw[16:24])
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(y[1], raw[17:25])
    split = len(raw) - round(len(raw) * 0.25)
    tx, _ = data.test.take(np.array([0]))
    np.testing.assert_array_equal(tx[0], raw[split : split + 8])  # the held-out tail
    assert len(data.train) == (split - 1) // 8


def test_tokens_file_is_uint16_windows(tmp_path: Path) -> None:
    ids = (np.arange(1000) * 7 % 50).astype(np.uint16)
    path = tmp_path / "train.bin"
    ids.tofile(path)
    data = build_source(_config(name="tokens", path=str(path), vocab_size=50, block_size=16,
                                test_fraction=0.1), 0)
    assert data.num_classes == 50 and len(data.train) == (900 - 1) // 16
    x, y = data.train.take(np.array([5]))
    np.testing.assert_array_equal(x[0], ids[80:96])
    np.testing.assert_array_equal(y[0], ids[81:97])


def test_arrays_and_map_style_data_of_your_own(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 5), dtype=np.float32), rng.integers(0, 4, 30)
    data = to_source(Dataset(x[:20], y[:20], x[20:], y[20:]), _config(name="digits"))
    assert data.num_classes == int(y[:20].max()) + 1 and data.input_shape == (5,)
    np.save(tmp_path / "x.npy", x[:20])
    on_disk = to_source(Dataset(open_npy(tmp_path / "x.npy"), y[:20], x[20:], y[20:]),
                        _config(name="digits"))
    for a, b in zip(on_disk.train.take(np.array([2, 9])), data.train.take(np.array([2, 9])),
                    strict=True):
        np.testing.assert_array_equal(a, b)

    class Pairs:
        num_classes = 4

        def __len__(self) -> int:
            return 30

        def __getitem__(self, i: int):
            return x[i], y[i]

    mapped = to_source(Pairs(), _config(name="digits", test_fraction=0.1))
    assert (len(mapped.train), len(mapped.test), mapped.num_classes) == (27, 3, 4)
    got_x, got_y = mapped.train.take(np.array([0, 1]))
    want = mapped.train.index[[0, 1]]
    np.testing.assert_array_equal(got_x, x[want])
    np.testing.assert_array_equal(got_y, y[want])
    pair = to_source((Pairs(), Pairs()), _config(name="digits"))
    assert len(pair.train) == len(pair.test) == 30
    with pytest.raises(UserError, match="map-style data set"):
        to_source(42, _config(name="digits"))


def test_map_style_labels_outside_classes_fail_at_their_batch() -> None:
    class Bad:
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            return np.zeros(3), 7

    data = to_source(Bad(), _config(name="digits", classes=5))
    with pytest.raises(UserError, match=r"label 7 is outside \[0, 5\)"):
        data.train.take(np.array([0]))
    with pytest.raises(UserError, match=r"set data\.classes"):
        to_source(Bad(), _config(name="digits"))


def test_npy_errors(tmp_path: Path) -> None:
    assert "data.path: /nope does not exist" in _error(name="npy", path="/nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no x_train.npy" in _error(name="npy", path=str(empty))
    folder = _npy(tmp_path / "d", n=20)
    np.save(folder / "y_train.npy", np.zeros(19, dtype=np.int64))
    assert "20 inputs but 19 labels" in _error(name="npy", path=str(folder))
    np.save(folder / "y_train.npy", np.arange(20))
    assert "label 19 is outside [0, 3)" in _error(name="npy", path=str(folder), classes=3)
    np.save(folder / "y_train.npy", np.zeros(20, dtype=np.float32))
    assert "labels must be integers" in _error(name="npy", path=str(folder))
    np.save(folder / "y_train.npy", np.zeros(20, dtype=np.int64))
    np.save(folder / "x_test.npy", np.zeros((3, 4, 4, 2), dtype=np.uint8))
    assert "has x_test.npy but no y_test.npy" in _error(name="npy", path=str(folder))
    np.save(folder / "y_test.npy", np.zeros(3, dtype=np.int64))
    np.save(folder / "x_test.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    assert "x_test.npy samples have shape (4, 4)" in _error(name="npy", path=str(folder))
    (folder / "x_train.npy").write_bytes(b"not numpy")
    assert "x_train.npy: not a readable .npy file" in _error(name="npy", path=str(folder))


def test_text_and_tokens_errors(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("ok " * 100 + "caf\xe9").encode("latin-1"))
    assert "not UTF-8 text (byte 303" in _error(name="text", path=str(latin), block_size=4)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x01\x00\x02")
    assert "holds 3 bytes, not a whole number of uint16" in _error(
        name="tokens", path=str(odd), vocab_size=10, block_size=1)
    ids = tmp_path / "ids.bin"
    np.array([1, 2, 3, 12, 4] * 10, dtype=np.uint16).tofile(ids)
    assert "token id 12 (at position 3) is not below data.vocab_size 10" in _error(
        name="tokens", path=str(ids), vocab_size=10, block_size=4)
    assert "too few for windows" in _error(name="tokens", path=str(ids), vocab_size=20,
                                           block_size=40)
    assert "is not a file" in _error(name="text", path=str(tmp_path), block_size=4)


@pytest.mark.parametrize("data, expected", [
    ({"name": "npy"}, "data.path is required for data set npy"),
    ({"name": "text", "path": "x"}, "data.block_size is required for data set text"),
    ({"name": "tokens", "path": "x", "block_size": 4}, "data.vocab_size must lie in [1, 65536]"),
    ({"name": "digits", "workers": -1}, "data.workers must not be negative"),
])
def test_recipe_field_checks(data: dict, expected: str) -> None:
    with pytest.raises(UserError) as info:
        _config(**data)
    assert expected in str(info.value)


def test_model_must_fit_the_data(tmp_path: Path) -> None:
    folder = _npy(tmp_path / "d", n=20)
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "x_train.npy", np.zeros((20, 6), dtype=np.float32))
    np.save(flat / "y_train.npy", np.zeros(20, dtype=np.int64))
    images = build_source(_config(name="npy", path=str(folder)), 0)
    check_model_fits("cnn", images)
    check_model_fits("mlp", images)
    with pytest.raises(UserError, match=r"model cnn takes samples of 3 dimensions.*\(6,\)"):
        check_model_fits("cnn", build_source(_config(name="npy", path=str(flat)), 0))
    text = tmp_path / "t.txt"
    text.write_text("abc" * 100)
    recipe = recipe_from_dict({"model": {"name": "mlp"}, "optimizer": {"name": "sgd"},
                               "data": {"name": "text", "path": str(text), "block_size": 8}})
    with pytest.raises(UserError, match="model mlp is for classification but the data set "
                                        r"is for language model"):
        check_data(recipe)
