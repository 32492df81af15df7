"""BatchNorm statistics across data-parallel replicas, for PyTorch.

`average_statistics` allreduces (averages) every running mean and variance over the replicas,
so that evaluation, checkpoints and exports see one model, not each rank's own statistics.
`synchronise` (model.sync_batchnorm) makes each BatchNorm layer normalise by the statistics of
the whole global batch: the sums of x and x^2 and the count are allreduced in the forward, and
Horovod's allreduce carries the gradient back. Written here from `hvd.allreduce` because
Horovod's `hvd.SyncBatchNorm` takes GPU tensors only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

STATISTICS = ("running_mean", "running_var")  # not num_batches_tracked, a count


@torch.no_grad()
def average_statistics(model: nn.Module, hvd: Any, process_set: Any) -> None:
    """Every replica's running statistics replaced by their average over `process_set`."""
    buffers = [b for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in STATISTICS]
    if not buffers or process_set.size() == 1:
        return
    averaged = hvd.grouped_allreduce([b.cpu() for b in buffers], op=hvd.Average,
                                     process_set=process_set, name="hvdkit.bn_statistics")
    for buffer, value in zip(buffers, averaged, strict=True):
        buffer.copy_(value)


class _Synchronised:
    """Mixed into a BatchNorm class: in training, the moments of the global batch."""

    hvd: Any = None
    process_set: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # type: ignore[attr-defined]
            return super().forward(x)  # type: ignore[misc]
        bn: Any = self
        axes = [0, *range(2, x.ndim)]
        channels = x.shape[1]
        local = torch.cat([x.sum(axes), (x * x).sum(axes),
                           x.new_full((1,), x.numel() / channels)])
        total = self.hvd.allreduce(local.cpu(), op=self.hvd.Sum,
                                   process_set=self.process_set).to(x.device)
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels:2 * channels] / n - mean * mean
        if bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked += 1
                momentum = bn.momentum if bn.momentum is not None \
                    else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.lerp_(mean, momentum)
                bn.running_var.lerp_(var * n / (n - 1), momentum)  # unbiased, as torch keeps
        shape = [1, channels] + [1] * (x.ndim - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        return y * bn.weight.view(shape) + bn.bias.view(shape) if bn.affine else y


_CLASSES: dict[type, type] = {}


def synchronise(model: nn.Module, hvd: Any, process_set: Any) -> int:
    """Make every BatchNorm1d/2d/3d layer of `model` synchronised (in place: the same
    parameters, buffers and state_dict keys); returns how many."""
    count = 0
    for module in model.modules():
        cls = type(module)
        if cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            if cls not in _CLASSES:
                _CLASSES[cls] = type(f"Sync{cls.__name__}", (_Synchronised, cls), {})
            module.__class__ = _CLASSES[cls]
            module.hvd, module.process_set = hvd, process_set
            count += 1
    return count
