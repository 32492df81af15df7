"""`hvdkit export RUN`: the trained model of a run, in files that need only its framework.

The newest good checkpoint of the run folder is rebuilt into the recipe's model (a built-in
one, or model.builder's, found in the recipe's folder the run recorded) and written by the
framework's exporter (`hvdkit/adapters/<framework>/export.py`), by default to `<run>/export/`:

- PyTorch: `model.pt2`, a `torch.export` program (`torch.export.load(path).module()`, batch
  size free), and `model.pt`, the `state_dict` (`torch.load(path, weights_only=True)`, for
  hvdkit's own classes).
- TensorFlow: `saved_model/`, a TF SavedModel (`tf.saved_model.load(path).serve(x)`, batch
  size free), and `model.keras` where the model serialises (mlp, cnn, resnet with hvdkit
  imported, most users' models; not the GPT, whose head shares the embedding's variable).

Either loads with only its framework installed: no hvdkit, no Horovod. The model takes the
inputs it was trained on (images channels first with model.channels_first) and gives logits
(or what a user's model gives); an image folder's model takes float images normalised by
the ImageNet mean and std. The resolved recipe goes next to it (`recipe.yaml`), for an
image folder the class names (`classes.json`, label i the i-th), `preprocessing.json` (what
turns raw inputs into the model's: hvdkit.training.preprocessing) and `README.md`, whose Python
loads the model without hvdkit, applies preprocessing.json to raw data and computes the
accuracy on the run's test data (hvdkit.training.export_readme).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hvdkit.errors import UserError
from hvdkit.models.usermodel import model_input_shape, output_kind
from hvdkit.recipe import Recipe, recipe_from_dict
from hvdkit.training.checkpoint import load_latest
from hvdkit.training.export_readme import export_readme
from hvdkit.training.preprocessing import preprocessing_spec

FORMATS = ("native",)


@dataclass
class TrainedRun:
    """A run folder's recipe, framework and newest good checkpoint, with what its model sees."""

    recipe: Recipe
    framework: str
    checkpoint: Path
    payload: dict[str, Any]
    input_shape: tuple[int, ...]
    """One sample as the model takes it (channels first with model.channels_first)."""
    num_classes: int
    sample: np.ndarray
    """A few training inputs in that shape and the data's dtype (builds a user's model)."""
    data: Any = None
    """The run's DataSource (closed): what preprocessing.json describes."""

    @property
    def state(self) -> dict[str, Any]:
        return self.payload["state"]


def recipe_folder(run: Path, config: dict[str, Any]) -> str | None:
    """Where the run's builders were found: config.yaml's record, else the launcher's job.json."""
    if config.get("recipe_folder"):
        return str(config["recipe_folder"])
    job = run / "job.json"
    if job.is_file():
        return json.loads(job.read_text()).get("recipe_folder")
    return None


def load_run(run: str | Path) -> TrainedRun:
    """The run folder `run`, ready to rebuild its model (no Horovod job, no framework yet)."""
    run = Path(run)
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run} is not a run folder (it has no config.yaml)")
    config = yaml.safe_load(config_file.read_text())
    recipe = recipe_from_dict(config["recipe"], source=str(config_file))
    recipe.folder = recipe_folder(run, config)  # type: ignore[misc]
    checkpoint, payload = load_latest(run, recipe)
    if "pipeline_stages" in payload["state"]:
        raise UserError(f"{run} is a pipeline run: exporting its stages as one model is not "
                        "supported yet")
    from hvdkit.data.builder import build_source

    data = build_source(recipe.data, recipe.train.seed, recipe.folder)
    sample = data.train.take(np.arange(min(2, len(data.train))))[0]
    if data.normalization is not None:  # uint8 images, normalised as on the device
        from hvdkit.data.images import normalize

        sample = normalize(sample, data.normalization)
    sample = sample.astype(data.input_dtype)
    shape = model_input_shape(data.input_shape, recipe.model.channels_first, config["framework"])
    if sample.ndim == 4 and model_input_shape((1, 2, 3), recipe.model.channels_first,
                                              config["framework"]) == (3, 1, 2):
        sample = sample.transpose(0, 3, 1, 2)  # images handed to the model channels first
    run_data = TrainedRun(recipe, config["framework"], checkpoint, payload, shape,
                          data.num_classes, np.ascontiguousarray(sample), data)
    data.close()
    return run_data


def exporter(framework: str) -> Any:
    """The framework's export module (builds, loads and writes models)."""
    from hvdkit.adapters.base import load_framework

    load_framework(framework)  # a clear error for an unknown or missing framework
    return importlib.import_module(f"hvdkit.adapters.{framework}.export")


def outputs_of(trained: TrainedRun, outputs: np.ndarray) -> str:
    """What the model gives: model.output, else logits for a built-in model, else what its
    outputs on a few samples look like (hvdkit.models.usermodel.output_kind)."""
    setting = trained.recipe.model.output
    if setting != "auto":
        return setting
    return output_kind(outputs) if trained.recipe.model.builder else "logits"


def write_preprocessing(trained: TrainedRun, outputs: np.ndarray, written: list[Path],
                        out: Path) -> None:
    """preprocessing.json and README.md beside the exported model."""
    spec = preprocessing_spec(trained.recipe, trained.data, trained.framework,
                              trained.input_shape, outputs_of(trained, outputs),
                              [p.name for p in written])
    (out / "preprocessing.json").write_text(json.dumps(spec, indent=2) + "\n")
    (out / "README.md").write_text(export_readme(spec, out.resolve(), trained.recipe.name))


def export_run(run: str | Path, fmt: str = "native", out: str | Path | None = None) -> Path:
    """Write `run`'s trained model to `out` (default `<run>/export`); return the model file."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    trained = load_run(run)
    out = Path(out) if out is not None else Path(run) / "export"
    out.mkdir(parents=True, exist_ok=True)
    framework = exporter(trained.framework)
    model = framework.build_model(trained)
    written = framework.export_model(trained, out, model)
    (out / "recipe.yaml").write_text(yaml.safe_dump(trained.recipe.to_dict(), sort_keys=False))
    classes = Path(run) / "classes.json"  # an image folder's class names, label i the i-th
    if classes.is_file():
        (out / "classes.json").write_text(classes.read_text())
    write_preprocessing(trained, framework.predict(model, trained.sample), written, out)
    print(f"[hvdkit] exported {trained.framework} model of {run} (checkpoint "
          f"{trained.checkpoint.name}, step {trained.payload['position']['step']}) to "
          f"{', '.join(str(p) for p in written)}; {out / 'README.md'} shows how to use it "
          "without hvdkit (preprocessing.json: raw inputs to the model's)", flush=True)
    return written[0]
