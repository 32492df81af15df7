"""PyTorch optimizers for a recipe's `optimizer` section, with the meaning both frameworks share.

`sgd` and `adam` take `weight_decay` as L2: wd * w added to the gradient before the update
(torch's own `weight_decay` argument). `adamw` and `lamb` decay the weights decoupled from the
gradient. torch has no LAMB, so `Lamb` below is the paper's (You et al., 2019, algorithm 2):
the Adam direction plus wd * w, scaled per tensor by the trust ratio ||w|| / ||direction||.
hvdkit/adapters/tensorflow/optimizers.py computes the same numbers in Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from hvdkit.config import OptimizerConfig

ADAM_EPSILON = 1e-8  # torch's default, set in Keras too (whose default is 1e-7)
LAMB_EPSILON = 1e-6


class Lamb(torch.optim.Optimizer):
    """LAMB: per tensor, r = m_hat / (sqrt(v_hat) + eps) + wd * w, then
    w -= lr * (||w|| / ||r||) * r (ratio 1 where either norm is 0). The ratio is per tensor,
    not elementwise: stepping a flat concatenation of tensors (ZeRO-1's shard) would differ."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = LAMB_EPSILON, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.sub_(group["lr"] * ratio * update)
        return loss


def make_optimizer(config: OptimizerConfig, params: Any) -> torch.optim.Optimizer:
    """The recipe's optimizer over `params`."""
    wd = config.weight_decay
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=wd)
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, eps=ADAM_EPSILON, weight_decay=wd)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, eps=ADAM_EPSILON, weight_decay=wd)
    return Lamb(params, lr=config.lr, weight_decay=wd)
