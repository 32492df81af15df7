"""A model builder whose training steps take as long as the test asks: a stand-in for a slow
step (ResNet-50 on a CPU) in the stop tests. The sleep changes no number, so a run with it and
one without train the same weights.

    model: {builder: "tests.integration.workers.slow_model:build", args: {hidden: 32}}

HVDKIT_TEST_STEP_SLEEP (seconds) makes each training forward sleep; HVDKIT_TEST_STEP_LOG
(a path) gets one line per training forward of each rank (PATH.<pid>), so a test can tell a
step is under way.
"""

from __future__ import annotations

import os
import time
from typing import Any


def build(input_shape: tuple[int, ...], num_classes: int, hidden: int = 32) -> dict[str, Any]:
    def torch_model(shape: tuple[int, ...], classes: int) -> Any:
        import torch
        from torch import nn

        class SlowMLP(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()),
                                                                   hidden),
                                          nn.ReLU(), nn.Linear(hidden, classes))

            def forward(self, x: Any) -> Any:
                if self.training and len(x) > 4:  # not the builder's probe, not evaluation
                    log = os.environ.get("HVDKIT_TEST_STEP_LOG")
                    if log:
                        with open(f"{log}.{os.getpid()}", "a") as f:
                            f.write(f"{time.time()}\n")
                    time.sleep(float(os.environ.get("HVDKIT_TEST_STEP_SLEEP", "0")))
                return self.body(x)

        return SlowMLP()

    return {"torch": torch_model}
