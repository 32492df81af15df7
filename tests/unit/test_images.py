"""Image folders: the layout and its classes, decoding with torchvision's transforms (reduced
DCT decoding where the crop allows), deterministic augmentation and evaluation crops, unreadable
files skipped and counted, worker processes, normalisation on the device, and bad input as one
line with exit code 2."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hvdkit.data import ShardedLoader, build_source
from hvdkit.data.imagecodec import center_crop, random_resized_crop, transform
from hvdkit.data.images import IMAGENET_MEAN, IMAGENET_STD, Unreadable, normalize
from hvdkit.data.sample_images import CORRUPT_NAME, encode, make_image, write_image_folder
from hvdkit.data.workers import start_workers
from hvdkit.errors import UserError
from hvdkit.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]


def _config(**data):
    return recipe_from_dict({"model": {"name": "cnn"}, "optimizer": {"name": "sgd"},
                             "data": {"image_size": 32, **data}}).data


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=3, train_per_class=12,
                              val_per_class=4)


def _source(folder: Path, **data):
    return build_source(_config(name="images", path=str(folder), **data), seed=0)


def test_the_folder_layout_gives_sorted_classes_and_both_splits(folder: Path,
                                                                tmp_path: Path) -> None:
    data = _source(folder)
    assert data.class_names == ["class_0", "class_1", "class_2"] and data.num_classes == 3
    assert len(data.train) == 3 * 12 + 1 and len(data.test) == 3 * 4  # + the corrupt file
    assert data.input_shape == (32, 32, 3) and data.input_dtype == "float32"
    assert data.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    x, y = data.test.take(np.arange(len(data.test)))
    assert x.dtype == np.uint8 and x.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(y, np.repeat([0, 1, 2], 4))
    # Without val/, a fixed share of train/ is held out; the class folders alone work too.
    flat = tmp_path / "flat"
    for name in ("class_0", "class_1", "class_2"):
        (flat / name).mkdir(parents=True)
        for f in sorted((folder / "train" / name).glob("0000*")):
            (flat / name / f.name).write_bytes(f.read_bytes())
    held = _source(flat, test_fraction=0.25)
    again = _source(flat, test_fraction=0.25)
    assert len(held.train) + len(held.test) == 30 and len(held.test) == 8
    np.testing.assert_array_equal(held.test.items, again.test.items)


def test_transforms_are_torchvisions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = int(rng.integers(40, 600)), int(rng.integers(40, 600))
        left, top, right, bottom = random_resized_crop(width, height, rng)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        ratio = (right - left) / (bottom - top)
        area = (right - left) * (bottom - top) / (width * height)
        assert 0.6 < ratio < 1.6 and area <= 1.0
    # The test crop: Resize(256) then CenterCrop(224), as a box of the original 500x375 image.
    left, top, right, bottom = center_crop(500, 375, 224)
    scale = 375 / 256
    assert (right - left) == pytest.approx(224 * 500 / 341) and (bottom - top) == \
        pytest.approx(224 * scale)
    image = make_image(np.random.default_rng(1), 1, 500, 375)
    data = encode(image, "png")  # lossless: the reference sees the same pixels
    ours = transform(data, 224, train=False, augment="imagenet", rng=None)
    resized = Image.fromarray(image).resize((341, 256), Image.BILINEAR)
    reference = np.asarray(resized.crop((58, 16, 58 + 224, 16 + 224)))
    assert np.abs(ours.astype(int) - reference).mean() < 2.0
    whole = transform(data, 64, train=True, augment="none", rng=None)
    expected = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR))
    np.testing.assert_array_equal(whole, expected)


def test_jpegs_are_decoded_at_a_reduced_size_where_the_crop_allows() -> None:
    rng = np.random.default_rng(2)  # a smooth picture, nowhere clipped at 0 or 255
    field = Image.fromarray(rng.integers(40, 200, (6, 8, 3), dtype=np.uint8))
    image = np.asarray(field.resize((500, 375), Image.BILINEAR))
    data = encode(image, "jpg", quality=95)
    small = transform(data, 32, train=False, augment="none", rng=None)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32),
                                                                          Image.BILINEAR))
    assert np.abs(small.astype(int) - full).mean() < 1.5  # 1/8 DCT scale, same picture
    big = transform(data, 224, train=False, augment="imagenet", rng=None)
    assert big.shape == (224, 224, 3)


def test_augmentation_is_seeded_by_the_epoch_and_the_file_and_eval_crops_never_change(
        folder: Path) -> None:
    data, again = _source(folder), _source(folder)
    idx = np.arange(8)
    for split in (data.train, again.train):
        split.set_epoch(3)
    np.testing.assert_array_equal(data.train.take(idx)[0], again.train.take(idx)[0])
    again.train.set_epoch(4)
    assert not np.array_equal(data.train.take(idx)[0], again.train.take(idx)[0])
    for split in (data.test, again.test):
        split.set_epoch(7)  # no effect on the test crop
    np.testing.assert_array_equal(data.test.take(idx)[0], _source(folder).test.take(idx)[0])
    np.testing.assert_array_equal(data.test.take(idx)[0], data.test.take(idx)[0])


def test_an_unreadable_file_is_replaced_counted_and_named_once(folder: Path, capsys) -> None:
    data = _source(folder)
    names = [data.train.store.name(int(i)) for i in data.train.items]
    bad = names.index(f"train/class_0/{CORRUPT_NAME}")
    idx = np.arange(bad - 2, bad + 2)
    for _ in range(2):
        x, y = data.train.take(idx)
    np.testing.assert_array_equal(x[2], x[3])  # the next image of the batch took its place
    assert y[2] == y[3]
    assert list(data.train.unreadable.found) == [f"train/class_0/{CORRUPT_NAME}"]
    err = capsys.readouterr().err
    assert err.count("unreadable image skipped") == 1
    assert "corrupt.jpg (not a JPEG or PNG image)" in err
    # A batch of unreadable files only takes the split's next readable image.
    lone = _source(folder)
    x, y = lone.train.take(np.array([bad]))
    assert x.shape == (1, 32, 32, 3) and y[0] == lone.train.labels[bad + 1]


def test_too_many_unreadable_files_stop_the_run_with_one_line() -> None:
    tracker = Unreadable(total=200, limit=0.01, where="imgs")
    tracker.add([("a.jpg", "truncated"), ("b.jpg", "not an image")])
    with pytest.raises(UserError) as info:
        tracker.add([("c.jpg", "empty")])
    message = str(info.value)
    assert "\n" not in message and "3 of the 200 images of imgs cannot be read" in message
    assert "a.jpg (truncated)" in message and "data.unreadable_limit (0.01)" in message


def test_worker_processes_decode_the_same_batches_and_count_their_speed(folder: Path) -> None:
    plain, pooled = _source(folder), _source(folder)
    start_workers(pooled, 2)
    try:
        assert pooled.train.pool is pooled.test.pool  # one pool for both splits
        got = []
        for data in (plain, pooled):
            loader = ShardedLoader(data.train, batch_size=5, rank=1, size=2, seed=3, prefetch=2)
            got.append([b for epoch in range(2) for b in loader.batches(epoch)])
        for (x0, y0), (x1, y1) in zip(*got, strict=True):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)
        images, seconds, workers = pooled.train.decode_stats()
        assert images == sum(len(y) for _, y in got[1]) and seconds > 0 and workers == 2
        assert plain.train.decode_stats()[2] == 1  # the prefetch thread decoded those
        assert len(pooled.train.unreadable.found) <= 1
        blocks = [block.name for block in pooled.train.pool._blocks]
        assert blocks and all(Path("/dev/shm", name).exists() for name in blocks)
    finally:
        pooled.close()
    assert not any(Path("/dev/shm", name).exists() for name in blocks)  # unlinked


def test_every_image_is_taken_once_an_epoch_across_ranks(folder: Path) -> None:
    data = _source(folder)
    for size in (1, 2, 3):
        for epoch in range(2):
            taken = np.concatenate([
                ShardedLoader(data.train, batch_size=4, rank=r, size=size, seed=0)
                .epoch_indices(epoch) for r in range(size)])
            steps = len(data.train) // (4 * size)
            assert len(taken) == len(set(taken.tolist())) == steps * 4 * size


def test_normalisation_on_the_device_matches_numpy() -> None:
    import tensorflow as tf
    import torch

    from hvdkit.adapters.tensorflow.inputs import normalize as tf_normalize
    from hvdkit.adapters.torch.inputs import normalize as torch_normalize

    x = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    stats = (IMAGENET_MEAN, IMAGENET_STD)
    expected = ((x / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)
    np.testing.assert_allclose(normalize(x, stats), expected, atol=1e-5)
    np.testing.assert_allclose(torch_normalize(torch.from_numpy(x), stats).numpy(), expected,
                               atol=1e-5)
    np.testing.assert_allclose(tf_normalize(tf.constant(x), stats).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(tf_normalize(x, stats).numpy(), expected, atol=1e-5)
    floats = torch.zeros(2, 3)
    assert torch_normalize(floats, stats) is floats and tf_normalize(x, None) is x


def test_folder_errors_are_one_line(tmp_path: Path) -> None:
    def error(**data) -> str:
        with pytest.raises(UserError) as info:
            build_source(_config(name="images", **data), 0)
        assert "\n" not in str(info.value)
        return str(info.value)

    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert "has no class folders" in error(path=str(tmp_path / "empty"))
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.jpg").write_bytes(b"x")
    assert "its images lie loose in it" in error(path=str(loose))
    one = tmp_path / "one" / "train"
    (one / "cat").mkdir(parents=True)
    (one / "dog").mkdir()
    (one / "cat" / "1.png").write_bytes(encode(np.zeros((8, 8, 3), np.uint8), "png"))
    (one / "dog" / "notes.txt").write_text("no images here")
    assert f"class folder {one / 'dog'} holds no .jpg" in error(path=str(tmp_path / "one"))
    assert "does not exist" in error(path=str(tmp_path / "nowhere"))


def _hvdkit(recipe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", "train", str(recipe), "-np", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_bad_image_input_exits_2_with_one_line_before_any_worker(tmp_path: Path) -> None:
    import tarfile

    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    empty = tmp_path / "emptyclass" / "train"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    (empty / "a" / "1.jpg").write_bytes(encode(np.zeros((8, 8, 3), np.uint8), "jpg"))
    with tarfile.open(tmp_path / "labels-000000.tar", "w") as tar:
        info = tarfile.TarInfo("0001.cls")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"3"))
    cases = [
        (f"{{name: images, path: {tmp_path}/noclasses, image_size: 32}}", "has no class folders"),
        (f"{{name: images, path: {tmp_path}/emptyclass, image_size: 32}}",
         "class folder " + str(empty / "b") + " holds no .jpg, .jpeg or .png images"),
        (f"{{name: webdataset, path: '{tmp_path}/shards-{{000..009}}.tar'}}",
         f"data.path: {tmp_path}/shards-{{000..009}}.tar matches no file"),
        (f"{{name: webdataset, path: '{tmp_path}/labels-{{000000..000000}}.tar'}}",
         "has no .jpg, .jpeg or .png members"),
        (f"{{name: images, path: {tmp_path}, image_size: 16}}",
         "data.image_size must be at least 32 pixels, got 16"),
    ]
    for data, expected in cases:
        recipe = tmp_path / "bad.yaml"
        recipe.write_text(f"model: {{name: cnn}}\ndata: {data}\noptimizer: {{name: sgd}}\n")
        result = _hvdkit(recipe)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (data, result.stderr)
        assert lines[0].startswith("hvdkit: error: ") and expected in lines[0], lines
        assert "launching" not in result.stderr


def test_the_input_path_reports_its_wait_share_and_decoding_speed(folder: Path) -> None:
    import time

    from hvdkit.training.callbacks import ProgressBar
    from hvdkit.training.inputmeter import InputMeter

    data = _source(folder)
    meter = InputMeter(data.train)
    assert meter.decoders == 1  # no workers: the prefetch thread decodes

    def slow_batches():
        for step in range(3):
            time.sleep(0.05)  # the loop waits for each batch
            yield data.train.take(np.arange(step * 4, step * 4 + 4))

    for _ in meter.timed(slow_batches()):
        time.sleep(0.05)  # the step
    row = meter.interval()
    assert 0.15 <= row[0] < row[1] and row[2] == 12 and row[3] > 0
    figures = meter.add(row * 2, after_warmup=True)  # two ranks alike
    assert 0.3 < figures["data_wait_share"] < 0.7
    assert figures["decoded_per_sec_per_worker"] == pytest.approx(12 / row[3])
    summary = meter.summary()
    assert summary["images_decoded"] == 24 and summary["decoders_per_rank"] == 1
    stream = io.StringIO()
    bar = ProgressBar(stream=stream)
    bar.on_train_begin({"total_steps": 1, "epochs": 1})
    bar.on_step_end(0, {"loss": 1.0, "accuracy": 0.5, "samples_per_sec": 10.0, "epoch": 0,
                        **figures})
    line = stream.getvalue()
    assert f"data wait {100 * figures['data_wait_share']:.0f}%" in line
    assert "img/s/worker (busy" in line


def test_without_room_in_dev_shm_batches_come_through_the_pipe(folder: Path,
                                                                monkeypatch) -> None:
    plain, pooled = _source(folder), _source(folder)
    start_workers(pooled, 1)
    monkeypatch.setattr("hvdkit.data.workers._shm_free", lambda: 0)
    try:
        idx = np.arange(6)
        x, _ = pooled.train.submit(idx).get()
        np.testing.assert_array_equal(x, plain.train.take(idx)[0])
        assert pooled.train.pool._blocks == []  # none lent
    finally:
        pooled.close()
