"""WebDataset shards: brace patterns, folders and lists; the tar index (GNU and pax long names);
the same samples as the image folder they were written from; the epoch's order walking the
shards in seeded groups, alike on every rank; bad shards as one-line errors."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hvdkit.data import ShardedLoader, build_source
from hvdkit.data.sample_images import encode, write_image_folder, write_shards
from hvdkit.data.webdataset import TarStore, expand, index_shards, shard_paths
from hvdkit.errors import UserError
from hvdkit.recipe import recipe_from_dict


def _config(**data):
    return recipe_from_dict({"model": {"name": "cnn"}, "optimizer": {"name": "sgd"},
                             "data": {"name": "webdataset", "image_size": 32, **data}}).data


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("wds")
    folder = write_image_folder(root / "folder", classes=3, train_per_class=20,
                                val_per_class=4, corrupt=False)
    train = write_shards(folder, root / "shards", per_shard=16)
    val = write_shards(folder, root / "shards", per_shard=16, split="val")
    return folder, train, val


def test_brace_patterns_globs_folders_and_lists(made, tmp_path: Path) -> None:
    assert expand("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert expand("{x,y}/s-{0..1}.tar") == ["x/s-0.tar", "x/s-1.tar", "y/s-0.tar", "y/s-1.tar"]
    assert expand("plain.tar") == ["plain.tar"]
    _, train, val = made
    folder = train[0].parent
    assert shard_paths(str(folder / "train-{000000..000003}.tar"), "p") == train
    assert shard_paths(str(folder / "train-*.tar"), "p") == train
    assert shard_paths(str(folder), "p") == sorted(train + val)
    assert shard_paths([str(train[0]), str(folder / "val-*.tar")], "p") == [train[0], *val]
    with pytest.raises(UserError, match=r"train-\{000000..000009\}.tar: 6 of its 10 shards do "
                                        r"not exist, the first .*train-000004.tar"):
        shard_paths(str(folder / "train-{000000..000009}.tar"), "data.path")
    with pytest.raises(UserError, match=r"holds no \.tar shards"):
        shard_paths(str(tmp_path), "data.path")


def test_shards_hold_the_same_samples_as_the_folder(made) -> None:
    folder, train, _ = made
    shard, offset, size, label = index_shards(train)
    store = TarStore(train, shard, offset, size)
    got = sorted((hashlib.sha1(store.read(i)).hexdigest(), int(label[i]))
                 for i in range(len(store)))
    classes = sorted(p.name for p in (folder / "train").iterdir())
    expected = sorted((hashlib.sha1(f.read_bytes()).hexdigest(), c)
                      for c, name in enumerate(classes)
                      for f in (folder / "train" / name).iterdir())
    assert got == expected and len(got) == 60
    assert store.name(0).startswith(f"{train[0]}:") and store.name(0).endswith((".jpg", ".png"))


def test_the_source_and_its_test_shards(made) -> None:
    _, train, val = made
    pattern = str(train[0].parent / "train-{000000..000003}.tar")
    data = build_source(_config(path=pattern, val_path=str(val[0].parent / "val-*.tar")), 0)
    assert len(data.train) == 60 and len(data.test) == 12 and data.num_classes == 3
    x, y = data.test.take(np.arange(12))
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert sorted(y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    held = build_source(_config(path=pattern, test_fraction=0.25), 0)
    assert len(held.train) == 45 and len(held.test) == 15


def test_the_epoch_walks_the_shards_in_seeded_groups_alike_on_every_rank(made) -> None:
    _, train, _ = made
    pattern = str(train[0].parent / "train-{000000..000003}.tar")
    one = build_source(_config(path=pattern, val_path=str(train[0]), shard_group=1), 0).train
    order = one.epoch_order(5, 0)
    assert sorted(order.tolist()) == list(range(60))
    runs = one.shards[order]
    assert (np.diff(runs) != 0).sum() == 3  # each shard read in one stretch
    assert not np.array_equal(order, one.epoch_order(5, 1))
    np.testing.assert_array_equal(order, one.epoch_order(5, 0))
    two = build_source(_config(path=pattern, val_path=str(train[0]), shard_group=2), 0).train
    walk = two.shards[two.epoch_order(5, 0)].tolist()
    pair = {walk[0]} | {s for s in walk[:16] if s != walk[0]}
    group = sum(walk.count(s) for s in pair)
    assert len(pair) == 2 and set(walk[:group]) == pair  # two whole shards, mixed together
    for size in (1, 2, 3):
        loaders = [ShardedLoader(two, batch_size=4, rank=r, size=size, seed=5)
                   for r in range(size)]
        taken = np.concatenate([loader.epoch_indices(0) for loader in loaders])
        steps = 60 // (4 * size)
        assert len(taken) == len(set(taken.tolist())) == steps * 4 * size


def _tar(path: Path, members: list[tuple[str, bytes]], fmt: int) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_member_names(tmp_path: Path, fmt: int) -> None:
    image = encode(np.full((8, 8, 3), 9, np.uint8), "png")
    folder = "d" * 120 if fmt != tarfile.USTAR_FORMAT else "d" * 90  # ustar: a 155-byte prefix
    members = [(f"{folder}/sample_one.png", image), (f"{folder}/sample_one.cls", b"2\n")]
    path = _tar(tmp_path / "long.tar", members, fmt)
    shard, offset, size, label = index_shards([path])
    assert len(shard) == 1 and label.tolist() == [2]
    assert TarStore([path], shard, offset, size).read(0) == image


def test_bad_shards_are_one_line_errors(tmp_path: Path) -> None:
    image = encode(np.zeros((8, 8, 3), np.uint8), "jpg")
    cases = [
        (_tar(tmp_path / "nolabel.tar", [("a.jpg", image)], tarfile.GNU_FORMAT),
         "sample a has no .cls member"),
        (_tar(tmp_path / "text.tar", [("a.jpg", image), ("a.cls", b"cat")], tarfile.GNU_FORMAT),
         "a.cls holds b'cat', not a class id"),
        (_tar(tmp_path / "onlycls.tar", [("a.cls", b"1")], tarfile.GNU_FORMAT),
         "has no .jpg, .jpeg or .png members"),
    ]
    (tmp_path / "notatar.tar").write_bytes(b"\x1f\x8b" + bytes(1022))
    cases.append((tmp_path / "notatar.tar", "is not a tar file"))
    for path, expected in cases:
        with pytest.raises(UserError) as info:
            build_source(_config(path=str(path)), 0)
        assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"data\.path is a list, which only data set webdataset"):
        recipe_from_dict({"model": {"name": "cnn"}, "optimizer": {"name": "sgd"},
                          "data": {"name": "images", "path": ["a", "b"]}})
