"""Your own model and data by import path (hvdkit.models.builders): found beside the recipe,
and every
mistake one line, exit 2, before any worker starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hvdkit.data.builder import build_data
from hvdkit.errors import UserError
from hvdkit.models.builders import call_model_builder, resolve
from hvdkit.recipe import DataConfig, ModelConfig, load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]
MODULE = '''
import numpy as np

def arrays(rows=40, classes=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 4)).astype(np.float64)
    return x, (np.arange(rows) % classes)

def four(**_):
    return tuple(np.zeros((n, 2), np.float32) if i % 2 == 0 else np.arange(n) % 5
                 for i, n in enumerate((8, 8, 2, 2)))

def model(input_shape, num_classes, width=3):
    return {"tensorflow": ("a Keras model", input_shape, num_classes, width)}

def text(input_shape, num_classes):
    return "not a model"

NOT_CALLABLE = 3
'''


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    name = f"userbuilders_{tmp_path.name}".replace("-", "_")  # a fresh module per test
    (tmp_path / f"{name}.py").write_text(MODULE)
    (tmp_path / "broken_mod.py").write_text("def f(:\n")
    (tmp_path / "recipe.yaml").write_text(
        f"model: {{builder: '{name}:text'}}\ndata: {{builder: '{name}:arrays', "
        "args: {rows: 30}}\noptimizer: {name: sgd}\n")
    return tmp_path


def _module(folder: Path) -> str:
    return next(p.stem for p in folder.glob("userbuilders_*.py"))


def _error(func, *args) -> str:
    with pytest.raises(UserError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_resolve_errors_name_the_field_and_the_fix(folder: Path) -> None:
    mod = _module(folder)
    assert "must name a function as" in _error(resolve, "nocolon", "model.builder", folder)
    message = _error(resolve, "no_such_module:f", "model.builder", folder)
    assert message.startswith("model.builder 'no_such_module:f': cannot import no_such_module")
    assert str(folder) in message and "ModuleNotFoundError" in message
    assert "SyntaxError" in _error(resolve, "broken_mod:f", "data.builder", folder)
    assert "has no 'missing'" in _error(resolve, f"{mod}:missing", "data.builder", folder)
    assert "is a int, not a function" in _error(resolve, f"{mod}:NOT_CALLABLE", "x", folder)
    assert resolve(f"{mod}:arrays", "data.builder", folder).__name__ == "arrays"


def test_data_builder_returns_arrays_split_or_whole(folder: Path) -> None:
    mod = _module(folder)
    data = build_data(DataConfig(builder=f"{mod}:arrays", args={"rows": 50}), 0, folder)
    assert (len(data.x_train), len(data.x_test)) == (40, 10)
    assert data.x_train.dtype == np.float32 and data.num_classes == 3
    data = build_data(DataConfig(builder=f"{mod}:four"), 0, folder)
    assert len(data.x_train) == 8 and len(data.y_test) == 2 and data.num_classes == 5
    message = _error(build_data, DataConfig(builder=f"{mod}:model", args={
        "input_shape": 1, "num_classes": 2}), 0, folder)
    assert "returned a builtins.dict; return an hvdkit.data.Dataset" in message


def test_model_builder_dict_picks_the_framework(folder: Path) -> None:
    mod = _module(folder)
    config = ModelConfig(builder=f"{mod}:model", args={"width": 7})
    assert call_model_builder(config, "tensorflow", (4,), 3, folder)[1:] == ((4,), 3, 7)
    assert "returned a dict without a 'torch' model (keys: tensorflow)" in _error(
        call_model_builder, config, "torch", (4,), 3, folder)


def test_recipe_sections_take_a_name_or_a_builder(folder: Path) -> None:
    base = {"optimizer": {"name": "sgd"}, "data": {"name": "digits"}}
    with pytest.raises(UserError, match=r"exactly one of model.name"):
        recipe_from_dict({**base, "model": {"name": "mlp", "builder": "a:b"}})
    with pytest.raises(UserError, match=r"exactly one of model.name"):
        recipe_from_dict({**base, "model": {}})
    with pytest.raises(UserError, match=r"model.args are the arguments of model.builder"):
        recipe_from_dict({**base, "model": {"name": "mlp", "args": {"a": 1}}})
    with pytest.raises(UserError, match=r"model.args must be a mapping"):
        recipe_from_dict({**base, "model": {"builder": "a:b", "args": [1]}})
    with pytest.raises(UserError, match=r"exactly one of data.name"):
        recipe_from_dict({**base, "model": {"name": "mlp"}, "data": {}})
    recipe = load_recipe(folder / "recipe.yaml")
    assert recipe.folder == str(folder) and recipe.data.args == {"rows": 30}
    assert "folder" not in recipe.to_dict()  # not a recipe field: runs may move


def _hvdkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvdkit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("model, expected", [
    ("nowhere:build", "model.builder 'nowhere:build': cannot import nowhere"),
    ("{mod}:model", "returned a dict without a 'torch' model"),
    ("{mod}:text", "model.builder '{mod}:text' is a builtins.str; the torch adapter needs"),
])
def test_cli_refuses_a_bad_builder_before_any_worker(folder: Path, model: str,
                                                     expected: str) -> None:
    mod = _module(folder)
    recipe = folder / "bad.yaml"
    recipe.write_text(f"model: {{builder: '{model.format(mod=mod)}'}}\n"
                      f"data: {{builder: '{mod}:arrays'}}\noptimizer: {{name: sgd}}\n")
    result = _hvdkit("train", str(recipe), "-np", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.format(mod=mod) in lines[0], lines
    assert "launching" not in result.stderr


def test_user_models_in_each_framework() -> None:
    """One process, both frameworks: the wrong framework's model is one line; a softmax
    output is detected; a channels-first PyTorch CNN on channels-last batches says the fix."""
    code = textwrap.dedent('''
        import numpy as np, keras, torch
        from torch import nn
        from hvdkit.adapters.torch import usermodel as tu
        from hvdkit.adapters.tensorflow import usermodel as ku
        from hvdkit.errors import UserError
        from hvdkit.models.usermodel import resolve_output
        softmax = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        def fails(call):
            try:
                call()
            except UserError as exc:
                return str(exc)
            raise AssertionError("no error")
        print("K2T", fails(lambda: tu.as_model(softmax, (4,), 3)))
        print("T2K", fails(lambda: ku.as_model(conv, (8, 8, 3), 3)))
        print("FACTORY", type(ku.as_model(lambda s, c: softmax, (4,), 3)).__name__)
        out = ku.probe(softmax, np.ones((5, 4), np.float32), "/CPU:0", False)
        print("KIND", resolve_output("auto", out, 3, "m"))
        logits = nn.Sequential(nn.Linear(4, 3))
        out = tu.probe(logits, np.ones((5, 4), np.float32), "cpu", False)
        print("TKIND", resolve_output("auto", out, 3, "m"))
        log_probs = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(-1))
        out = tu.probe(log_probs, np.ones((5, 4), np.float32), "cpu", False)
        print("LOGP", resolve_output("auto", out, 3, "m"))
        image = np.zeros((2, 8, 8, 3), np.float32)
        print("NHWC", fails(lambda: tu.probe(conv, image, "cpu", False)))
        print("NCHW", tu.probe(conv, image, "cpu", True).shape)
        print("SHAPE", fails(lambda: resolve_output("auto", out[:, :2], 10, "the model")))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"TF_CPP_MIN_LOG_LEVEL": "3", **__import__("os").environ})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["K2T"].startswith("the model is a Keras model, but this run's framework is "
                                   "torch; run it with --framework tensorflow")
    assert "is a PyTorch nn.Module, but this run's framework is tensorflow" in lines["T2K"]
    assert lines["FACTORY"] == "Sequential"
    assert lines["KIND"] == "probabilities"
    assert lines["TKIND"] == "logits" and lines["LOGP"] == "logits"
    assert "model.channels_first: true" in lines["NHWC"]
    assert lines["NCHW"] == "(2, 144)"
    assert "must give 10 scores per sample" in lines["SHAPE"]


KERAS_BUILDERS = '''
import keras
import numpy as np

def kmodel(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_classes)])

def fails(input_shape, num_classes):
    raise ValueError(f"no model for {input_shape}")

def data():
    x = np.random.default_rng(0).standard_normal((256, 4)).astype(np.float32)
    return x, np.arange(256) % 2
'''


def test_a_builder_that_raises_is_one_line_naming_its_line(tmp_path: Path) -> None:
    (tmp_path / "raising_builders.py").write_text("def f(input_shape, num_classes):\n"
                                                  "    raise ValueError('bad width')\n")
    message = _error(call_model_builder, ModelConfig(builder="raising_builders:f"), "torch",
                     (4,), 2, tmp_path)
    assert message == ("model.builder 'raising_builders:f' failed (raising_builders.py:2): "
                       "ValueError: bad width")


def test_model_kind_is_checked_without_the_framework() -> None:
    code = textwrap.dedent('''
        import sys
        from hvdkit.errors import UserError
        from hvdkit.models.usermodel import check_model_kind
        check_model_kind(lambda shape, classes: None, "torch", "m")  # a factory: the ranks'
        try:
            check_model_kind("text", "tensorflow", "m")
        except UserError as exc:
            print(exc)
        print(sorted(m for m in ("torch", "keras", "tensorflow") if m in sys.modules))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.splitlines() == [
        "m is a builtins.str; the tensorflow adapter needs a keras.Model, or a function "
        "(input_shape, num_classes) -> keras.Model", "[]"], out.stderr


def test_a_keras_builder_is_checked_before_launch_in_one_line(tmp_path: Path) -> None:
    """The builder's module imports Keras (TensorFlow's start-up lines): held back, so the
    wrong framework's model is the one line on stderr."""
    (tmp_path / "kbuilders.py").write_text(KERAS_BUILDERS)
    recipe = tmp_path / "k.yaml"
    recipe.write_text("model: {builder: 'kbuilders:kmodel'}\n"
                      "data: {builder: 'kbuilders:data'}\noptimizer: {name: sgd}\n")
    result = _hvdkit("train", str(recipe), "-f", "torch", "-np", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("hvdkit: error: model.builder 'kbuilders:kmodel' is a Keras model, "
                             "but this run's framework is torch; run it with --framework "
                             "tensorflow, or give an nn.Module, or a function (input_shape, "
                             "num_classes) -> nn.Module\n")
    assert result.stdout == ""
