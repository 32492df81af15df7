"""`export/README.md`: the exported files, preprocessing.json's fields, and Python that loads the
model without hvdkit, applies preprocessing.json to raw data and computes the accuracy on the
run's test data.

The code is four ```python blocks, run in order as one script (the export tests run exactly
these blocks, with hvdkit unimportable):
  1. preprocessing: `spec` (preprocessing.json) and `preprocess(raw)`; for image files
     `load_image(data)` too (numpy, Pillow)
  2. the model: `predict(x)`, the outputs of a preprocessed batch (the framework only)
  3. the run's test data: `test_batches()` yielding (raw inputs, labels)
  4. accuracy: `correct`, `count`, `accuracy`, printed
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PREPROCESS = '''\
# 1. preprocessing: preprocessing.json applied to a batch of raw inputs
{io}import json
{math}
import numpy as np
{image_libraries}
EXPORT = {export!r}  # this folder
with open(EXPORT + "/preprocessing.json") as f:
    spec = json.load(f)


def preprocess(raw):
    """A batch of raw inputs (the first axis the batch) as the model takes it."""
    x = np.asarray(raw)
    if spec["scale"] is not None:
        x = x.astype(np.float32) * np.float32(spec["scale"])
    if spec["mean"] is not None:
        mean, std = (np.asarray(spec[k], np.float32) for k in ("mean", "std"))
        x = (x - mean) / std
    if spec["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=spec["dtype"])
'''

IMAGE_LIBRARIES = '''from PIL import Image

try:  # hvdkit's JPEG decoder; without it, Pillow decodes (see spec["image"]["decode"])
    import simplejpeg
except ImportError:
    simplejpeg = None
'''

LOAD_IMAGE = '''

def load_image(data):
    """An image file's bytes as uint8 (size, size, 3), as hvdkit's test transform makes it."""
    size, resize = spec["image"]["size"], spec["image"]["resize"]
    width, height = Image.open(io.BytesIO(data)).size
    box = (0, 0, width, height)
    if resize == "center_crop":  # the shorter side to resize_shorter_to, then the center
        short = spec["image"]["resize_shorter_to"]
        if width <= height:
            new_w, new_h = short, int(short * height / width)
        else:
            new_w, new_h = int(short * width / height), short
        left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    need = (min(width, math.ceil(width * size / (box[2] - box[0]))),
            min(height, math.ceil(height * size / (box[3] - box[1]))))
    image = decode(data, need)
    sx, sy = image.size[0] / width, image.size[1] / height
    box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box))


def decode(data, need):
    """RGB; a JPEG at the smallest DCT scale that keeps `need` pixels, as hvdkit decodes."""
    if simplejpeg is not None and data[:2] == b"\\xff\\xd8":
        try:
            return Image.fromarray(simplejpeg.decode_jpeg(
                data, "RGB", min_width=need[0], min_height=need[1], min_factor=2))
        except ValueError:
            pass
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("RGB", need)
    return image.convert("RGB")
'''

MODEL = {
    "torch": '''\
# 2. the model: torch.export's program, in evaluation mode, any batch size
import torch

model = torch.export.load(EXPORT + "/model.pt2").module()


def predict(x):
    """The model's outputs (spec["output"]["kind"]) for a preprocessed batch."""
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()
''',
    "torch-weights": '''\
# 2. the model: torch.export could not capture it; model.pt holds its state_dict
import torch

model = ...  # your nn.Module, built as the run built it (recipe.yaml)
model.load_state_dict(torch.load(EXPORT + "/model.pt", weights_only=True))
model.eval()


def predict(x):
    """The model's outputs (spec["output"]["kind"]) for a preprocessed batch."""
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()
''',
    "tensorflow": '''\
# 2. the model: the TF SavedModel, in inference mode, any batch size
import tensorflow as tf

model = tf.saved_model.load(EXPORT + "/saved_model")


def predict(x):
    """The model's outputs (spec["output"]["kind"]) for a preprocessed batch."""
    return model.serve(x).numpy()
''',
}

HELD_OUT = '''

def held_out(n, rule):
    """The positions hvdkit holds out of n samples as the test set: a seeded share."""
    order = np.random.default_rng(rule["seed"]).permutation(n)
    return np.sort(order[:min(max(1, round(n * rule["fraction"])), n - 1)])


'''

ARRAY_BATCHES = '''

def test_batches(n=256):
    """(raw inputs, labels), n samples at a time."""
    for i in range(0, len(y), n):
        yield x_raw[i:i + n], y[i:i + n]
'''

FILE_BATCHES = '''

def test_batches(n=256):
    """(raw images decoded, labels), n files at a time; an unreadable file is skipped (hvdkit
    puts another image of its batch in its place)."""
    for i in range(0, len(items), n):
        raw, labels = [], []
        for where, label in items[i:i + n]:
            try:
                raw.append(load_image(read(where)))
            except Exception:
                continue
            labels.append(label)
        if raw:
            yield np.stack(raw), np.asarray(labels)
'''

# Each kind's block: (its comment and imports, what follows `held_out` where it has one).
TEST_DATA = {
    "digits": ('''\
# 3. the run's test data: scikit-learn's digits, the share hvdkit held out
from sklearn.datasets import load_digits
''', '''\
test = spec["test_data"]
digits = load_digits()
keep = held_out(len(digits.target), test["held_out"])
x_raw, y = digits.images[keep][..., None], digits.target[keep]
'''),
    "npy": ('''\
# 3. the run's test data: the .npy arrays (or the share of them hvdkit held out)
''', '''\
test = spec["test_data"]
x_raw, y = np.load(test["x"], mmap_mode="r"), np.load(test["y"])
y = y.reshape(len(y))
if test["held_out"]:
    keep = held_out(len(y), test["held_out"])
    x_raw, y = x_raw[keep], y[keep]
'''),
    "token_file": ('''\
# 3. the run's test data: windows of the token file's tail; labels, the next tokens
''', '''\
test = spec["test_data"]
tokens = np.fromfile(test["path"], dtype=test["dtype"]).astype(np.int64)
block, first = test["block_size"], len(tokens) - round(len(tokens) * test["test_fraction"])
starts = first + block * np.arange((len(tokens) - first - 1) // block)
windows = tokens[starts[:, None] + np.arange(block + 1)]
x_raw, y = windows[:, :-1], windows[:, 1:]
'''),
    "image_folder": ('''\
# 3. the run's test data: the image files of each class folder (or the share hvdkit held out)
import os
''', '''\
def read(path):
    with open(path, "rb") as f:
        return f.read()


test = spec["test_data"]
items = []  # (the file, its label)
for label, name in enumerate(spec["classes"]):
    for top, dirs, files in os.walk(os.path.join(test["folder"], name), followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        items += [(os.path.join(top, file), label) for file in sorted(files)
                  if not file.startswith(".")
                  and os.path.splitext(file)[1].lower() in (".jpg", ".jpeg", ".png")]
if test["held_out"]:
    items = [items[i] for i in held_out(len(items), test["held_out"])]
'''),
    "webdataset": ('''\
# 3. the run's test data: the images of the shards (KEY.jpg with KEY.cls, its class)
import os
import tarfile
''', '''\
def read(where):
    shard, offset, size = where
    with open(shard, "rb") as f:
        f.seek(offset)
        return f.read(size)


test = spec["test_data"]
items = []  # ((shard, offset, size) of the image, its label)
for shard in test["shards"]:
    found, labels = {}, {}
    with tarfile.open(shard) as tar:
        for member in tar:
            folder, base = os.path.split(member.name)
            stem, _, ext = base.partition(".")
            key, ext = os.path.join(folder, stem), ext.lower()
            if member.isfile() and ext in ("jpg", "jpeg", "png") and key not in found:
                found[key] = (shard, member.offset_data, member.size)
            elif member.isfile() and ext == "cls":
                labels[key] = int(tar.extractfile(member).read())
    items += [(where, labels[key]) for key, where in found.items()]
if test["held_out"]:
    items = [items[i] for i in held_out(len(items), test["held_out"])]
'''),
}

NO_TEST_DATA = '''\
# 3. your test data: hvdkit made the run's (or your data.builder did); give raw inputs as
# spec["raw_input"] says and their labels
x_raw, y = ..., ...
'''

ACCURACY = '''\
# 4. accuracy: the predicted class (or next token) against the label
correct = count = 0
for raw, labels in test_batches():
    outputs = predict(preprocess(raw))
    correct += int((outputs.argmax(-1) == labels).sum())
    count += labels.size
accuracy = correct / count
print(f"test accuracy {accuracy:.4f} ({correct} of {count})")
'''

FIELDS = """\
`preprocessing.json` turns a raw batch into the model's input, in this order:

1. `image` (image files only): decode to RGB, crop and resize to `size` x `size`
   (`resize`: `center_crop` takes the shorter side to `resize_shorter_to` and the center
   square; `whole` resizes the whole image), bilinear: uint8 (size, size, 3)
2. `scale`: `x = x.astype(float32) * scale` (null: none)
3. `mean`, `std`: `x = (x - mean) / std` over the last (channel) axis (null: none)
4. `layout`: `NCHW` transposes image batches (N, H, W, C) to (N, C, H, W); `NHWC` keeps them
5. `dtype`: the model's input dtype (`float32`, or `int64` token ids); `input_shape` is one
   sample's shape as the model takes it (the batch axis first, any size)

`output` says what the model gives (`logits`, or `probabilities` for a model ending in a
softmax) and its shape per sample; the prediction is the argmax of the last axis, and
`classes` names label i (null where the data names no classes). `raw_input` says what one
raw sample is, and `test_data` where the run's test samples are (`held_out`: a seeded share
of the training samples, as `held_out()` below picks them).
"""


def model_block(framework: str, files: list[str]) -> str:
    if framework == "torch":
        return MODEL["torch" if "model.pt2" in files else "torch-weights"]
    return MODEL["tensorflow"]


def code_blocks(spec: dict[str, Any], export: Path) -> list[str]:
    """The four blocks of Python (the module doc) for `spec`, its files in `export`."""
    images = spec["image"] is not None
    first = PREPROCESS.format(export=str(export), io="import io\n" if images else "",
                              math="import math\n" if images else "",
                              image_libraries=IMAGE_LIBRARIES if images else "")
    if images:
        first += LOAD_IMAGE
    test = spec["test_data"]
    if test is None:
        third = NO_TEST_DATA + ARRAY_BATCHES
    else:
        head, body = TEST_DATA[test["kind"]]
        held = HELD_OUT if "held_out" in test else "\n"
        files = test["kind"] in ("image_folder", "webdataset")
        third = head + held + body + (FILE_BATCHES if files else ARRAY_BATCHES)
    return [first, model_block(spec["framework"], spec["model_files"]), third, ACCURACY]


def export_readme(spec: dict[str, Any], export: Path, recipe_name: str) -> str:
    """README.md for an export folder holding `spec`'s model files."""
    files = "\n".join(f"- `{name}`" for name in
                      [*spec["model_files"], "preprocessing.json", "recipe.yaml",
                       *(["classes.json"] if spec["classes"] else [])])
    needs = {"torch": "PyTorch", "tensorflow": "TensorFlow"}[spec["framework"]]
    if spec["image"] is not None:
        needs += ", Pillow (and simplejpeg, hvdkit's JPEG decoder, for the same pixels)"
    if spec["test_data"] and spec["test_data"]["kind"] == "digits":
        needs += ", scikit-learn (the digits)"
    blocks = "\n".join(f"```python\n{code}```\n" for code in code_blocks(spec, export))
    return (f"# {recipe_name}: the exported {spec['framework']} model\n\n"
            f"Written by `hvdkit export`. Files:\n\n{files}\n\n"
            f"The model takes {spec['raw_input']} after preprocessing.json, and gives "
            f"{spec['output']['kind']} of shape {spec['output']['shape']} per sample.\n\n"
            f"{FIELDS}\n"
            f"## Without hvdkit\n\nThe blocks below, run in order as one script, need numpy, "
            f"{needs}, not hvdkit: they load the model, apply preprocessing.json to raw data "
            f"and compute the accuracy on the run's test data (its summary.json's "
            f"test_accuracy, within a sample).\n\n{blocks}")


def python_blocks(readme: str) -> list[str]:
    """The ```python blocks of a README, in order (what the export tests run)."""
    parts = readme.split("```python\n")[1:]
    return [part.split("```", 1)[0] for part in parts]
