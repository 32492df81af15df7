"""Recipes load strictly: every mistake names the file and the field, before any worker starts."""

from pathlib import Path

import pytest

from hvdkit.errors import UserError
from hvdkit.recipe import Recipe, load_recipe, recipe_from_dict

RECIPES = sorted(Path(__file__).resolve().parents[2].glob("recipes/*.yaml"))
MINIMAL = {"model": {"name": "mlp"}, "data": {"name": "digits"}, "optimizer": {"name": "sgd"}}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    assert isinstance(load_recipe(path), Recipe)


def test_defaults_fill_optional_sections() -> None:
    recipe = recipe_from_dict(MINIMAL)
    assert recipe.train.batch_size == 32 and recipe.parallel.reduction == "average"


def _error(data: dict, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        recipe_from_dict(data, source="r.yaml", overrides=overrides)
    return str(info.value)


def test_unknown_key_names_file_key_and_valid_keys() -> None:
    message = _error({**MINIMAL, "optimizer": {"name": "sgd", "lrr": 0.1}})
    assert message.startswith("r.yaml: unknown key 'optimizer.lrr'")
    assert "lr, momentum" in message


def test_unknown_top_level_section() -> None:
    assert "unknown key 'trian'" in _error({**MINIMAL, "trian": {}})


def test_wrong_type_names_field() -> None:
    message = _error({**MINIMAL, "train": {"batch_size": "big"}})
    assert message == "r.yaml: train.batch_size must be an integer, got 'big'"


def test_bool_is_not_an_integer() -> None:
    assert "train.epochs must be an integer" in _error({**MINIMAL, "train": {"epochs": True}})


def test_missing_required_field() -> None:
    assert _error({"model": {"name": "mlp"}, "data": {"name": "digits"}}) == \
        "r.yaml: missing required field 'optimizer'"
    assert "needs exactly one of model.name" in _error({**MINIMAL, "model": {}})


def test_choice_lists_valid_values() -> None:
    message = _error({**MINIMAL, "parallel": {"reduction": "max"}})
    assert "parallel.reduction must be one of average, sum, adasum" in message


def test_unknown_model_and_data_set_list_valid_names() -> None:
    message = _error({**MINIMAL, "model": {"name": "vgg"}})
    assert "unknown model 'vgg'; valid: mlp, cnn, resnet, gpt" in message
    message = _error({**MINIMAL, "data": {"name": "mnist"}})
    assert "valid: digits, images, npy, synthetic, text, tokens, webdataset" in message


def test_ranges_are_checked() -> None:
    assert "train.batch_size must be at least 1" in _error({**MINIMAL, "train": {"batch_size": 0}})
    message = _error({**MINIMAL, "optimizer": {"name": "sgd", "lr": 0}})
    assert "optimizer.lr must be positive" in message


def test_overrides_are_typed_and_validated() -> None:
    recipe = recipe_from_dict(MINIMAL, overrides=("optimizer.lr=0.5", "model.hidden=[8, 4]"))
    assert recipe.optimizer.lr == 0.5 and recipe.model.hidden == [8, 4]
    assert "unknown key 'train.bogus'" in _error(MINIMAL, ("train.bogus=1",))
    assert "expected key=value" in _error(MINIMAL, ("optimizer.lr",))


def test_fingerprint_changes_with_content() -> None:
    a = recipe_from_dict(MINIMAL)
    b = recipe_from_dict(MINIMAL, overrides=("optimizer.lr=0.5",))
    assert a.fingerprint() == recipe_from_dict(MINIMAL).fingerprint() != b.fingerprint()


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(bad)


def test_model_fields_are_checked() -> None:
    assert "model.depth must be one of 18, 34, 50, 101, 152" in _error(
        {**MINIMAL, "model": {"name": "resnet", "depth": 20}})
    assert "model.stem must be one of imagenet, small" in _error(
        {**MINIMAL, "model": {"name": "resnet", "stem": "tiny"}})
    assert "model.width 30 must divide by model.heads 4" in _error(
        {**MINIMAL, "model": {"name": "gpt", "width": 30}})
    assert "model.dropout must lie in [0, 1)" in _error(
        {**MINIMAL, "model": {"name": "gpt", "dropout": 1.0}})
    assert "parallel.stages cuts model gpt into 7 parts but it has only 4 layers" in _error(
        {**MINIMAL, "model": {"name": "gpt", "layers": 2},
         "parallel": {"stages": 7}, "train": {"batch_size": 7}})
