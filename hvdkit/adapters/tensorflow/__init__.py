"""The TensorFlow / Keras 3 adapter: `tensorflow`, `keras` and `horovod.tensorflow` are
imported only below this folder."""

from hvdkit.adapters.tensorflow import gpt, resnet, usermodel  # noqa: F401  (they register in MODELS)
from hvdkit.adapters.tensorflow.adapter import TensorFlowAdapter as Adapter
from hvdkit.adapters.tensorflow.models import MODELS

__all__ = ["MODELS", "Adapter", "usermodel"]
