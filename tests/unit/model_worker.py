"""Builds hvdkit's catalogued models in one framework and prints what tests/unit/test_models.py
compares across frameworks: parameter counts, output shapes and top-level layers.

    python tests/unit/model_worker.py torch|tensorflow
"""

from __future__ import annotations

import json
import sys

import numpy as np

FRAMEWORK = sys.argv[1]
if FRAMEWORK == "torch":
    import torch

    from hvdkit.adapters.torch import MODELS

    def params(model) -> int:
        return sum(p.numel() for p in model.parameters())

    def run(model, x: np.ndarray) -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(model.eval()(torch.from_numpy(x)).shape)

    def layers(model) -> list:
        return [any(True for _ in c.parameters()) for c in model.children()]
else:
    from hvdkit.adapters.tensorflow import MODELS

    def params(model) -> int:
        return sum(int(np.prod(v.shape)) for v in model.trainable_variables)

    def run(model, x: np.ndarray) -> tuple[int, ...]:
        return tuple(model(x, training=False).shape)

    def layers(model) -> list:
        return [bool(layer.trainable_weights) for layer in model.layers]

from hvdkit.models.catalogue import MODEL_NAMES, layer_count  # noqa: E402
from hvdkit.parallel.pipeline import group_layers  # noqa: E402
from hvdkit.recipe import ModelConfig  # noqa: E402

IMAGE = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
TOKENS = np.arange(2 * 12, dtype=np.int64).reshape(2, 12) % 50
CASES = {  # name: (config, input, classes)
    "mlp": (ModelConfig(name="mlp"), IMAGE, 10),
    "cnn": (ModelConfig(name="cnn"), IMAGE, 10),
    "cnn_channels_first": (ModelConfig(name="cnn", channels_first=True),
                           IMAGE.transpose(0, 3, 1, 2).copy(), 10),
    "resnet18_small": (ModelConfig(name="resnet", depth=18, stem="small", width=4), IMAGE, 10),
    "resnet50_small_cf": (ModelConfig(name="resnet", depth=50, stem="small", width=2,
                                      channels_first=True), IMAGE.transpose(0, 3, 1, 2).copy(),
                          7),
    "resnet34_imagenet": (ModelConfig(name="resnet", depth=34, width=2),
                          np.zeros((1, 32, 32, 3), np.float32), 5),
    "gpt": (ModelConfig(name="gpt", layers=3, heads=2, width=16, block_size=16), TOKENS, 50),
}
results = {}
for case, (config, x, classes) in CASES.items():
    if FRAMEWORK == "tensorflow" and config.channels_first:
        x = x.transpose(0, 2, 3, 1).copy()  # Keras models always get channels last
    model = MODELS.get(config.name)(config, x.shape[1:], classes)
    cut = group_layers(layers(model))
    results[case] = {"params": params(model), "shape": run(model, x), "cuttable": len(cut),
                     "layer_count": layer_count(config)}
for depth in (18, 50):  # the paper's models on ImageNet
    config = ModelConfig(name="resnet", depth=depth)
    results[f"resnet{depth}_imagenet_1000"] = {
        "params": params(MODELS.get("resnet")(config, (224, 224, 3), 1000))}
results["names"] = MODELS.names()
results["catalogue"] = sorted(MODEL_NAMES)
print("RESULT " + json.dumps(results))
