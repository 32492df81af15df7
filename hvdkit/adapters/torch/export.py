"""PyTorch export: a run's model with its checkpoint's weights, as files only torch reads.

`model.pt2` is a `torch.export` program: the model's graph and weights, in evaluation mode
(no dropout, batch norm on its running statistics), any batch size; `torch.export.load(path)
.module()(x)` needs neither hvdkit nor its classes. `model.pt` is the `state_dict` besides
(`torch.load(path, weights_only=True)`, for a model rebuilt from hvdkit's classes). A user's
model that `torch.export` cannot capture (data-dependent Python control flow) gets the
`state_dict` only, with a line saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hvdkit.adapters.torch import usermodel
from hvdkit.adapters.torch.models import MODELS
from hvdkit.models.builders import call_model_builder


def build_model(trained: Any) -> nn.Module:
    """`trained`'s model (an hvdkit.training.export.TrainedRun) with its checkpoint's weights,
    in evaluation mode."""
    config = trained.recipe.model
    if config.builder:
        what = f"model.builder {config.builder!r}"
        built = call_model_builder(config, "torch", trained.input_shape, trained.num_classes,
                                   trained.recipe.folder)
        model = usermodel.as_model(built, trained.input_shape, trained.num_classes, what)
    else:
        model = MODELS.get(config.name)(config, trained.input_shape, trained.num_classes)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v))
                           for k, v in trained.state["model"].items()})
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's outputs on inputs `x` (as numpy)."""
    return model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()


def export_model(trained: Any, out: Path, model: nn.Module | None = None) -> list[Path]:
    """Write `model.pt2` (when the model can be captured) and `model.pt` of `model` (default:
    `build_model(trained)`); the paths written, the one to load first."""
    model = model if model is not None else build_model(trained)
    weights = out / "model.pt"
    torch.save(model.state_dict(), weights)  # tensors only: torch.load(weights_only=True)
    program = out / "model.pt2"
    program.unlink(missing_ok=True)
    sample = torch.from_numpy(np.concatenate([trained.sample] * 2))  # >= 2 rows: batch free
    try:
        batch = torch.export.Dim("batch", min=1)
        captured = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # a model torch.export cannot trace: keep the state_dict
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"[hvdkit] torch.export could not capture the model ({first}); {weights} holds "
              "its weights", file=sys.stderr, flush=True)
        return [weights]
    torch.export.save(captured, program)
    return [program, weights]
