"""Your own model for a recipe, for both frameworks (see recipe.yaml).

hvdkit calls `mlp(input_shape, num_classes, **model.args)`. It returns one factory per
framework, so that only the run's framework is imported; returning an `nn.Module` or a
`keras.Model` directly works as well.
"""


def mlp(input_shape, num_classes, hidden=32):
    def torch_model(shape, classes):
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(shape[0], hidden), nn.ReLU(),
                             nn.Linear(hidden, classes))

    def keras_model(shape, classes):
        import keras

        return keras.Sequential([keras.Input(shape), keras.layers.Dense(hidden, "relu"),
                                 keras.layers.Dense(classes)])

    return {"torch": torch_model, "tensorflow": keras_model}
