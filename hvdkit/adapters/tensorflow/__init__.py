"""The TensorFlow / Keras 3 adapter: tensorflow, keras and horovod.tensorflow live only here."""

from hvdkit.adapters.tensorflow import gpt, resnet, usermodel  # noqa: F401  (they register in MODELS)
from hvdkit.adapters.tensorflow.adapter import TensorFlowAdapter as Adapter
from hvdkit.adapters.tensorflow.models import MODELS
from hvdkit.adapters.tensorflow.pipeline import TensorFlowPipelineAdapter as PipelineAdapter

__all__ = ["MODELS", "Adapter", "PipelineAdapter", "usermodel"]
