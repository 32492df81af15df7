"""hvdkit: train one model on PyTorch or TensorFlow, on one process or many, through Horovod.

    from hvdkit import Trainer, load_recipe
    summary = Trainer(load_recipe("recipes/digits_mlp.yaml"), framework="torch").fit()

Importing hvdkit imports no framework; the adapter you pick does.
"""

from hvdkit.config import Recipe
from hvdkit.errors import UserError
from hvdkit.recipe import load_recipe, recipe_from_dict
from hvdkit.trainer import Trainer
from hvdkit.version import VERSION as __version__

__all__ = ["Recipe", "Trainer", "UserError", "__version__", "load_recipe", "recipe_from_dict"]
