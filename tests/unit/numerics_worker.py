"""Weight gradients of hvdkit's built-in convolutional models, as training computes them in
float32 on this CPU, against the same model in float64 (which runs none of oneDNN's kernels),
for tests/unit/test_numerics.py. One process per framework, memory format and thread count:
a wrong kernel can corrupt the heap, and then only the process should die, not pytest.

    python tests/unit/numerics_worker.py torch auto 1
    python tests/unit/numerics_worker.py tensorflow - 2
    python tests/unit/numerics_worker.py torch lone 1     (oneDNN#6035's own shape, alone)

Prints one JSON object: {"isa": ..., "models": {name: {"error": e, "tolerance": t,
"skipped": [bad convolution names]}}}.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

FRAMEWORK, FORMAT, THREADS = sys.argv[1], sys.argv[2], int(sys.argv[3])
BATCH, SIZE, CLASSES = 8, 32, 5
EPS32 = float(np.finfo(np.float32).eps)
# Weights and data drawn from this seed keep every pre-activation clear of ReLU's kink by more
# than float32's rounding (the tolerance assumes a smooth function): at seed 0 one of Keras
# ResNet-50's sits within rounding of zero, and the kink moves its gradients by 4e-3.
SEED = 1

# name → model fields: a small CNN, ResNet-18 (basic blocks) at widths 4 and 8, ResNet-50
# (bottleneck blocks) at width 2 (its shortcuts' 1x1/2 convolutions have 8, 16 and 32 inputs).
MODELS = {
    "cnn": {"name": "cnn", "channels": [4, 8], "hidden": [16]},
    "resnet18_w4": {"name": "resnet", "depth": 18, "width": 4, "stem": "small"},
    "resnet18_w8": {"name": "resnet", "depth": 18, "width": 8, "stem": "small"},
    "resnet50_w4": {"name": "resnet", "depth": 50, "width": 4, "stem": "small"},
}


def tolerance(layers: int) -> float:
    """How far float32 may honestly be from float64: each of `layers` weighted layers adds
    rounding of about eps·sqrt(K) in relative norm, K the longest sum its backward takes (a
    weight gradient sums over batch × positions), and a factor 8 of margin: 3e-4 to 5e-3 for
    these models, where correct kernels measure 1e-6 and oneDNN#6035 gave 0.05 to 1.2.
    Batch norm uses its running statistics (evaluation mode): with a small batch's own
    statistics, the backward's cancellations amplify rounding through a deep network
    (ResNet-50 in training mode: 5e-3 against float64 with correct kernels)."""
    return 8.0 * layers * EPS32 * math.sqrt(BATCH * SIZE * SIZE)


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    return max(float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30))
               for g, w in zip(got, want, strict=True))


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return (rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32),
            rng.integers(0, CLASSES, BATCH))


def torch_errors() -> dict:
    import copy

    import torch

    from hvdkit.adapters.torch import MODELS as BUILDERS
    from hvdkit.adapters.torch.precision import known_bad_convolutions, prepare
    from hvdkit.config import ModelConfig
    from hvdkit.runtime.cpu import cpu_features

    torch.set_num_threads(THREADS)
    x, y = batch()

    def gradients(model: torch.nn.Module, dtype: torch.dtype) -> list[np.ndarray]:
        logits = model.eval()(torch.from_numpy(x).to(dtype))
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
        return [p.grad.double().numpy() for p in model.parameters()]

    out = {}
    for name, fields in MODELS.items():
        torch.manual_seed(SEED)
        model = BUILDERS.get(fields["name"])(ModelConfig(**fields), (SIZE, SIZE, 3), CLASSES)
        reference = gradients(copy.deepcopy(model).double(), torch.float64)
        bad = known_bad_convolutions(model, cpu_features().isa) \
            if FORMAT == "channels_last" else []
        layers = sum(1 for p in model.parameters() if p.dim() > 1)
        entry = {"tolerance": tolerance(layers), "skipped": bad}
        if not bad:  # the trainer's own preparation: memory format, input turn
            (call,) = prepare([model], torch.device("cpu"), FORMAT, compile=False,
                              say=lambda _: None)
            entry["error"] = relative_error(gradients(call, torch.float32), reference)
        out[name] = entry
    return out


def lone_convolution_error(repeats: int = 8) -> dict:
    """uxlfoundation/oneDNN#6035's shape alone: a 4 → 8 channel 1x1/2 convolution on 32x32
    channels-last input; the largest relative error of its weight gradient against float64
    over `repeats` passes (the bug writes past a buffer, so a pass may or may not go wrong)."""
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    conv = torch.nn.Conv2d(4, 8, 1, 2, bias=False)
    x = torch.randn(BATCH, 4, 32, 32)

    def gradient(dtype: torch.dtype, fmt: torch.memory_format) -> np.ndarray:
        layer = torch.nn.Conv2d(4, 8, 1, 2, bias=False).to(dtype)
        layer.load_state_dict(conv.state_dict())
        layer.to(memory_format=fmt)(x.to(dtype).contiguous(memory_format=fmt)).square().sum() \
            .backward()
        return layer.weight.grad.double().numpy()

    reference = gradient(torch.float64, torch.contiguous_format)
    error = max(relative_error([gradient(torch.float32, torch.channels_last)], [reference])
                for _ in range(repeats))
    return {"error": error, "tolerance": tolerance(1), "skipped": []}


def tensorflow_errors() -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    import keras

    from hvdkit.adapters.tensorflow import MODELS as BUILDERS
    from hvdkit.config import ModelConfig

    x, y = batch()

    def build(name: str, fields: dict, dtype: str) -> keras.Model:
        keras.config.set_dtype_policy(dtype)  # floatx alone: the first policy stays cached
        keras.utils.set_random_seed(SEED)
        return BUILDERS.get(fields["name"])(ModelConfig(**fields), (SIZE, SIZE, 3), CLASSES)

    def gradients(model: keras.Model, dtype: str) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            logits = model(tf.constant(x, dtype), training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.constant(y), logits))
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        return [np.asarray(g, dtype=np.float64) for g in grads]

    out = {}
    for name, fields in MODELS.items():
        model = build(name, fields, "float32")
        double = build(name, fields, "float64")
        double.set_weights([w.astype(np.float64) for w in model.get_weights()])
        layers = sum(1 for v in model.trainable_variables if len(v.shape) > 1)
        out[name] = {"tolerance": tolerance(layers), "skipped": [],
                     "error": relative_error(gradients(model, "float32"),
                                             gradients(double, "float64"))}
    keras.config.set_dtype_policy("float32")
    return out


if __name__ == "__main__":
    from hvdkit.runtime.cpu import cpu_features

    if FRAMEWORK == "tensorflow":
        models = tensorflow_errors()
    else:
        models = {"lone": lone_convolution_error()} if FORMAT == "lone" else torch_errors()
    print(json.dumps({"isa": cpu_features().isa, "models": models}))
