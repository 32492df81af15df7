"""TensorFlow export: a run's Keras model with its checkpoint's weights, as files TF reads.

`saved_model/` is a TF SavedModel written by `model.export`: the traced inference graph
(no dropout, batch norm on its moving statistics) and the weights, any batch size;
`tf.saved_model.load(path).serve(x)` (or `keras.layers.TFSMLayer(path)`) needs only
TensorFlow, not hvdkit's layer classes. Keras 3 keeps no layer code in a `.keras` file, so a
`.keras` file of a model with custom layers (hvdkit's ResNet blocks, a GPT) loads only where
those classes are importable: `model.keras` is written besides where the model serialises
(mlp and cnn anywhere, resnet with hvdkit imported; not the GPT, whose head shares the
embedding's variable).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hvdkit.adapters.tensorflow import usermodel
from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.models.builders import call_model_builder


def build_model(trained: Any) -> keras.Model:
    """`trained`'s model (an hvdkit.training.export.TrainedRun) with its checkpoint's weights."""
    config = trained.recipe.model
    if config.builder:
        what = f"model.builder {config.builder!r}"
        built = call_model_builder(config, "tensorflow", trained.input_shape,
                                   trained.num_classes, trained.recipe.folder)
        model = usermodel.as_model(built, trained.input_shape, trained.num_classes, what)
    else:
        model = MODELS.get(config.name)(config, trained.input_shape, trained.num_classes)
    model(trained.sample, training=False)  # builds a user's unbuilt model
    # The adapter's order (hvdkit.adapters.tensorflow.adapter): each layer's weights, a
    # shared one (the GPT's tied embedding) once.
    seen: set[int] = set()
    variables = [w for layer in model.layers for w in layer.weights
                 if not (id(w) in seen or seen.add(id(w)))]  # type: ignore[func-returns-value]
    for variable, value in zip(variables, trained.state["model"], strict=True):
        variable.assign(value)
    return model


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's outputs on inputs `x` (inference mode)."""
    return np.asarray(model(x, training=False), dtype=np.float32)


def export_model(trained: Any, out: Path, model: keras.Model | None = None) -> list[Path]:
    """Write `saved_model/` and, where the model serialises, `model.keras`, of `model`
    (default: `build_model(trained)`); the paths written, the one to load first."""
    model = model if model is not None else build_model(trained)
    saved = out / "saved_model"
    shutil.rmtree(saved, ignore_errors=True)
    signature = [tf.TensorSpec((None, *trained.sample.shape[1:]),
                               tf.as_dtype(trained.sample.dtype))]
    model.export(str(saved), format="tf_saved_model", verbose=False,
                 input_signature=signature)
    keras_file = out / "model.keras"
    keras_file.unlink(missing_ok=True)
    try:
        model.save(keras_file)
    except Exception as exc:  # a layer without get_config (the GPT's tied head, a user's)
        keras_file.unlink(missing_ok=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"[hvdkit] no model.keras: the model does not serialise ({first[:160]}); "
              f"{saved} holds it", file=sys.stderr, flush=True)
        return [saved]
    return [saved, keras_file]
