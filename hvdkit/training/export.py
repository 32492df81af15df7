"""`hvdkit export RUN`: the trained model of a run, in its framework's own format.

The newest good checkpoint of the run folder is rebuilt into the recipe's model and written by
the framework's exporter (`hvdkit/adapters/<framework>/export.py`): PyTorch, a `state_dict`
file (`model.pt`, loadable with `torch.load(path, weights_only=True)`); TensorFlow, a Keras
`model.keras` file. The resolved recipe goes next to it (`recipe.yaml`), and for an image
folder the class names (`classes.json`, label i the i-th; the model takes images normalised
by the ImageNet mean and std), by default in `<run>/export/`. No Horovod job is needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from hvdkit.errors import UserError
from hvdkit.recipe import recipe_from_dict
from hvdkit.training.checkpoint import load_latest

FORMATS = ("native",)


def export_run(run: str | Path, fmt: str = "native", out: str | Path | None = None) -> Path:
    """Write `run`'s trained model to `out` (default `<run>/export`); return the model file."""
    run = Path(run)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run} is not a run folder (it has no config.yaml)")
    config = yaml.safe_load(config_file.read_text())
    recipe = recipe_from_dict(config["recipe"], source=str(config_file))
    framework = config["framework"]
    checkpoint, payload = load_latest(run, recipe)
    state = payload["state"]
    if "pipeline_stages" in state:
        raise UserError(f"{run} is a pipeline run: exporting its stages as one model is not "
                        "supported yet")
    from hvdkit.data import build_source

    data = build_source(recipe.data, recipe.train.seed)  # the model's input and output sizes
    exporter = importlib.import_module(f"hvdkit.adapters.{framework}.export")
    out = Path(out) if out is not None else run / "export"
    out.mkdir(parents=True, exist_ok=True)
    model_file = exporter.export_model(recipe, state, data.input_shape, data.num_classes, out)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    classes = run / "classes.json"  # an image folder's class names, label i the i-th
    if classes.is_file():
        (out / "classes.json").write_text(classes.read_text())
    print(f"[hvdkit] exported {framework} model of {run} (checkpoint {checkpoint.name}, step "
          f"{payload['position']['step']}) to {model_file}", flush=True)
    return model_file
