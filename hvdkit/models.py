"""The built-in models, by recipe name. Each adapter registers one builder per name here.

The catalogue is framework-free so that a recipe's model name is checked before any worker
(or framework) starts; `tests/unit` checks that every adapter builds every name.
"""

MODEL_NAMES = {
    "mlp": "fully connected layers (model.hidden) on the flattened input",
    "cnn": "3x3 convolutions (model.channels), 2x2 max-pooling while the map is >= 4 wide, "
           "then fully connected layers (model.hidden)",
}
