"""`hvdkit export` writes models a user loads with only the framework: for every built-in model
(mlp, cnn, resnet, gpt) and a recipe's own model and data builders (examples/own_model), on
both frameworks, the exported model in a fresh interpreter that cannot import hvdkit gives
the run's own test accuracy on the same test set. `hvdkit generate` samples from the GPT run.
The code of the export's README.md, run as written with hvdkit unimportable, applies
preprocessing.json to the raw test data (the digits; an image folder's JPEG and PNG files,
channels first on PyTorch) and gives the run's test accuracy and loss.

Runs are tiny and one rank each (`-np 1`: a ResNet's batch-norm statistics are then the
run's own, with no question of which rank's are exported). Export runs from another folder
with no PYTHONPATH to the recipes, so builders are found through the run's record alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hvdkit import recipe_from_dict
from hvdkit.data.builder import build_source
from hvdkit.data.images import normalize
from hvdkit.data.sample_images import write_image_folder
from tests.integration.jobs import ROOT

pytestmark = pytest.mark.integration

FAST = ["--set", "train.epochs=1", "--set", "train.max_steps=12"]
RUNS = {
    "mlp": ("recipes/digits_mlp.yaml", ["--set", "train.epochs=1"]),
    "cnn": ("recipes/digits_cnn.yaml", [*FAST, "--set", "model.channels=[4]",
                                        "--set", "model.hidden=[16]"]),
    "resnet": ("recipes/resnet_small.yaml", [*FAST, "--set", "model.width=4",
                                             "--set", "data.samples=320",
                                             "--set", "data.shape=[12,12,3]",
                                             "--set", "train.batch_size=16"]),
    "gpt": ("recipes/gpt_text.yaml", [*FAST, "--set", "model.layers=1", "--set",
                                      "model.heads=2", "--set", "model.width=16", "--set",
                                      "model.block_size=16", "--set",
                                      "data.args={block_size: 16, test_fraction: 0.002}"]),
    "builders": ("examples/own_model/recipe.yaml", ["--set", "train.epochs=2"]),
}
# An image folder (100x80 JPEGs and PNGs, val/ its test set) at image_size 32: the CNN on
# PyTorch takes it channels first. Its test set is files, so it is checked through the README.
IMAGES = ("recipes/digits_cnn.yaml", ["--set", "data.name=images", "--set", "data.image_size=32",
                                      "--set", "model.channels=[8,16]", "--set",
                                      "model.hidden=[32]", "--set", "model.channels_first=true",
                                      "--set", "train.batch_size=16", "--set", "train.epochs=2"])

# Loads every exported model with hvdkit unimportable; prints {name: [test accuracy, test
# loss]} as JSON (the loss: mean cross-entropy of the logits, per token for the GPT).
LOADER = """
import json, sys
import numpy as np
class NoHvdkit:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hvdkit":
            raise ImportError("hvdkit is hidden from this interpreter")
sys.meta_path.insert(0, NoHvdkit())
framework, folder, names = sys.argv[1], sys.argv[2], sys.argv[3:]
if framework == "torch":
    import torch
    def load(path):
        model = torch.export.load(path + "/export/model.pt2").module()
        return lambda x: model(torch.from_numpy(x)).detach().numpy()
else:
    import tensorflow as tf
    def load(path):
        model = tf.saved_model.load(path + "/export/saved_model")
        return lambda x: model.serve(x).numpy()
found = {}
for name in names:
    with np.load(f"{folder}/{name}-test.npz") as z:
        x, y = z["x"], z["y"]
    model = load(f"{folder}/{name}")
    logits = np.concatenate([model(x[i:i + 256]) for i in range(0, len(x), 256)])
    logits = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    y = y.reshape(-1)
    top = logits.max(1)
    loss = top + np.log(np.exp(logits - top[:, None]).sum(1)) - logits[np.arange(len(y)), y]
    found[name] = [float((logits.argmax(1) == y).mean()), float(loss.mean())]
assert not [m for m in sys.modules if m.split(".")[0] == "hvdkit"]
print(json.dumps(found))
"""


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module", params=["torch", "tensorflow"])
def exported(request, tmp_path_factory) -> tuple[str, Path]:
    """Each model trained (np 1) and exported, its test set saved beside it."""
    framework, folder = request.param, tmp_path_factory.mktemp(f"export-{request.param}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    images = write_image_folder(folder / "images-data", classes=3, train_per_class=40,
                                val_per_class=10, size=(100, 80), corrupt=False)
    path = ["--set", f"data.path={images}"]
    for name, (recipe, extra) in {**RUNS, "images": (IMAGES[0], IMAGES[1] + path)}.items():
        run([sys.executable, "-m", "hvdkit", "train", recipe, "-f", framework, "-np", "1",
             "--threads", "1", "--no-progress", "--no-tensorboard", "--run-dir",
             str(folder / name), *extra], ROOT, env)
        config = yaml.safe_load((folder / name / "config.yaml").read_text())
        resolved = recipe_from_dict(config["recipe"])
        data = build_source(resolved.data, resolved.train.seed, config["recipe_folder"])
        x, y = data.test.take(np.arange(len(data.test)))
        if data.normalization is not None:  # the images as the model gets them
            x = normalize(x, data.normalization)
            x = x.transpose(0, 3, 1, 2) if framework == "torch" else x  # channels_first
        np.savez(folder / f"{name}-test.npz", x=x, y=y)
    runs = ", ".join(repr(str(folder / name)) for name in [*RUNS, "images"])
    run([sys.executable, "-c", "from hvdkit.cli import main\n"
         f"for run in [{runs}]:\n    assert main(['export', run]) == 0"], folder, env)
    return framework, folder


def test_exported_models_load_without_hvdkit_and_give_the_runs_accuracy(exported) -> None:
    framework, folder = exported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaded = json.loads(run([sys.executable, "-I", "-c", LOADER, framework, str(folder),
                             *RUNS], folder, env).stdout.splitlines()[-1])
    for name in RUNS:
        summary = json.loads((folder / name / "summary.json").read_text())
        accuracy, loss = loaded[name]
        assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-9), name
        # The loss too, which a model with other weights would not match by chance.
        assert loss == pytest.approx(summary["test_loss"], rel=1e-4), name
    assert (folder / "mlp" / "export" / "model.pt" if framework == "torch" else
            folder / "resnet" / "export" / "model.keras").is_file()


# Run before and after the README's code (hvdkit hidden, as in LOADER); prints [accuracy, count,
# mean cross-entropy, largest difference from the inputs hvdkit's test split gave the model
# (sys.argv[1], an .npz; both in an order of their values: the digits' test set is in
# permutation order)], from the README's own `accuracy`, `count`, `test_batches`, `predict`.
README_BEFORE = LOADER.split("framework, folder")[0]
README_AFTER = """
loss, inputs, targets = 0.0, [], []
for raw, labels in test_batches():
    x = preprocess(raw)
    inputs.append(x)
    targets.append(labels)
    logits = predict(x).astype(np.float64)
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    top = logits.max(1)
    loss += float((top + np.log(np.exp(logits - top[:, None]).sum(1))
                   - logits[np.arange(len(labels)), labels]).sum())


def ordered(x, y):
    order = np.lexsort(np.column_stack([x.reshape(len(x), -1), y.reshape(len(y), -1)]).T)
    return x[order], y[order]


with np.load(sys.argv[1]) as z:
    x_run, y_run = ordered(z["x"], z["y"])
x_ours, y_ours = ordered(np.concatenate(inputs), np.concatenate(targets))
assert x_ours.dtype == x_run.dtype and np.array_equal(y_ours, y_run)
assert not [m for m in sys.modules if m.split(".")[0] == "hvdkit"]
print(json.dumps([accuracy, count, loss / count, float(np.abs(x_ours - x_run).max())]))
"""


@pytest.mark.parametrize("name", ["cnn", "images"])
def test_readme_code_applies_preprocessing_to_raw_data_and_gives_the_runs_accuracy(
        exported, name: str) -> None:
    framework, folder = exported
    export = folder / name / "export"
    spec = json.loads((export / "preprocessing.json").read_text())
    readme = (export / "README.md").read_text()
    code = "".join(re.findall(r"```python\n(.*?)```", readme, flags=re.S))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run([sys.executable, "-I", "-c", README_BEFORE + code + README_AFTER,
                str(folder / f"{name}-test.npz")], folder, env)
    accuracy, count, loss, differs = json.loads(done.stdout.splitlines()[-1])
    assert differs <= 1e-5  # the inputs hvdkit gave the model (float32 rounding apart)
    assert f"test accuracy {accuracy:.4f} (" in done.stdout
    summary = json.loads((folder / name / "summary.json").read_text())
    assert abs(accuracy - summary["test_accuracy"]) <= 1 / count + 1e-12, (accuracy, summary)
    # The loss too, which other inputs would not match by chance (absolutely, where the run's
    # own float32 loss of a separable test set is a rounding error of float32 logits).
    assert loss == pytest.approx(summary["test_loss"], rel=1e-3, abs=1e-4)
    if name == "images":
        assert count == 30 and spec["classes"] == ["class_0", "class_1", "class_2"]
        assert spec["image"]["resize"] == "center_crop" and spec["scale"] == 1 / 255
        assert spec["layout"] == ("NCHW" if framework == "torch" else "NHWC")
        assert accuracy > 0.5  # learnt: three classes
    else:
        assert spec["scale"] == 1 / 16 and spec["layout"] == "NHWC"


# Greedy decoding with the exported GPT, hvdkit hidden: what `generate --temperature 0` says.
GREEDY = LOADER.split("found = {}")[0] + """
model = load(f"{folder}/gpt")
ids, block = list(b"def "), 16
for _ in range(12):
    window = np.zeros((1, block), np.int64)
    window[0, :len(ids[-block:])] = ids[-block:]
    ids.append(int(model(window)[0, len(ids[-block:]) - 1].argmax()))
print(bytes(ids).decode("utf-8", errors="replace"))
"""


def test_generate_samples_from_the_gpt_run(exported) -> None:
    framework, folder = exported
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    hvdkit = [sys.executable, "-m", "hvdkit", "generate"]
    greedy = run([*hvdkit, str(folder / "gpt"), "--prompt", "def ", "--tokens", "12",
                  "--temperature", "0"], folder, env)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    expected = run([sys.executable, "-I", "-c", GREEDY, framework, str(folder)], folder, clean)
    assert greedy.stdout == expected.stdout.splitlines()[-1] + "\n"
    assert greedy.stdout.startswith("def ")
    sampled = run([*hvdkit, str(folder / "gpt"), "--prompt", "def ", "--tokens", "12",
                   "--seed", "3"], folder, env)
    assert sampled.stdout.startswith("def ") and "sampling from" in sampled.stderr
    wrong = subprocess.run([*hvdkit, str(folder / "mlp"), "--prompt", "x"], cwd=folder,
                           env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "is not a language-model run" in wrong.stderr
