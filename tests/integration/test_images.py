"""Real 2-rank jobs on images as people store them (workers/images.py), on both frameworks:
a generated folder of JPEGs and PNGs in 3 classes with two corrupt training files and one corrupt
test file, decoded by 2 worker processes per rank, and the same images as WebDataset shards.

- every training image is asked for once an epoch across the ranks;
- stopped and resumed, the run ends bit for bit where the uninterrupted one ends;
- the corrupt files are skipped, named, and each counted once over the ranks and both splits
  (a training file lands on another rank in another epoch); the input path reports its speed;
- the shards train to the same accuracy band as the folder;
- the run saves the class names, and `hvdkit export` carries them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvdkit.config import DataConfig
from hvdkit.data.images import images as image_folder
from hvdkit.data.sample_images import CORRUPT_NAME, write_image_folder, write_shards
from tests.integration.jobs import ROOT, run_job, worker

pytestmark = pytest.mark.integration
TRAIN, GLOBAL_BATCH, STEPS_PER_EPOCH = 3 * 80 + 2, 32, 7  # 242 files: two corrupt ones too
BROKEN = ("train/class_2/broken.png", "val/class_1/broken.jpg")
"""Corrupt files beside write_image_folder's train/class_0/corrupt.jpg."""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    folder = write_image_folder(root / "folder", classes=3, train_per_class=80,
                                val_per_class=20)
    for name in BROKEN:
        (folder / name).write_bytes(b"not an image " * 20)
    write_shards(folder, root / "shards", per_shard=64)
    write_shards(folder, root / "shards", per_shard=64, split="val")
    return folder, root / "shards"


@pytest.mark.parametrize("framework, controller", [("torch", "mpi"), ("tensorflow", "gloo")])
def test_images_train_resume_exactly_and_shards_match(images, tmp_path: Path, framework: str,
                                                       controller: str) -> None:
    folder, shards = images
    job = run_job(worker("images", "--framework", framework, "--folder", str(folder),
                         "--shards", str(shards), "--out", str(tmp_path)),
                  np=2, controller=controller, timeout=600)
    results = json.loads((tmp_path / "results.json").read_text())

    # Each epoch, the ranks together asked for every training image at most once, and for
    # all of them but the incomplete last global batch.
    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1"):
        taken = seen[0][epoch] + seen[1][epoch]
        assert len(taken) == len(set(taken)) == STEPS_PER_EPOCH * GLOBAL_BATCH
        assert set(taken) <= set(range(TRAIN))
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled

    assert results["resumed_equal"] is True
    assert results["resumed"]["steps"] == results["full"]["steps"] == 2 * STEPS_PER_EPOCH

    full = results["full"]
    # Each corrupt file met counted once: the training ones some rank asked for, in either
    # epoch, and the test split's (evaluated whole).
    split = image_folder(DataConfig(name="images", path=str(folder)), 0).train
    corrupt = {p for p in range(TRAIN)
               if split.store.name(int(split.items[p])).endswith((CORRUPT_NAME, "broken.png"))}
    asked = {p for rank in seen for epoch in rank.values() for p in epoch}
    assert len(corrupt) == 2 and corrupt <= asked  # this seed's two epochs meet both
    assert full["input"]["unreadable_images"] == 3
    assert job.output.count(f"{CORRUPT_NAME} (not a JPEG or PNG image)") >= 1
    stats = full["input"]
    assert stats["workers"] == stats["decoders_per_rank"] == 2
    assert 0 <= stats["data_wait_share"] <= 1 and stats["decoded_per_sec_per_worker"] > 0
    assert stats["images_decoded"] > 0

    # The shards hold the same images: the same accuracy band (easy classes: both high).
    shards_accuracy = results["webdataset"]["test_accuracy"]
    assert full["test_accuracy"] >= 0.85 and shards_accuracy >= 0.85
    assert abs(full["test_accuracy"] - shards_accuracy) <= 0.1

    run = tmp_path / "run"
    assert json.loads((run / "classes.json").read_text()) == ["class_0", "class_1", "class_2"]
    if framework == "torch":
        subprocess.run([sys.executable, "-m", "hvdkit", "export", str(run)], cwd=ROOT,
                       check=True, capture_output=True, timeout=120)
        exported = json.loads((run / "export" / "classes.json").read_text())
        assert exported == ["class_0", "class_1", "class_2"]
