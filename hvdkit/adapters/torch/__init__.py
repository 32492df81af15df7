"""The PyTorch adapter: `torch` and `horovod.torch` are imported only below this folder."""

from hvdkit.adapters.torch import gpt, resnet, usermodel  # noqa: F401  (they register in MODELS)
from hvdkit.adapters.torch.adapter import TorchAdapter as Adapter
from hvdkit.adapters.torch.models import MODELS

__all__ = ["MODELS", "Adapter", "usermodel"]
