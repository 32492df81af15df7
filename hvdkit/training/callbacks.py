"""Callbacks: the loop's hooks. Metrics reach them already averaged across ranks.

Rank-0 side effects (printing, files) live here, so the loop itself stays free of them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

Logs = dict[str, Any]


class Callback:
    """Override the hooks you need; each gets the step or epoch and a logs dict."""

    def on_train_begin(self, logs: Logs) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs) -> None: ...
    def on_step_end(self, step: int, logs: Logs) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs) -> None: ...
    def on_train_end(self, logs: Logs) -> None: ...


class MetricsWriter(Callback):
    """Appends one JSON line per logged step and per epoch to `metrics.jsonl`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def on_train_begin(self, logs: Logs) -> None:
        self._file = self.path.open("a")

    def _write(self, record: Logs) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")

    def on_step_end(self, step: int, logs: Logs) -> None:
        self._write({"kind": "step", "step": step, **logs})

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self._write({"kind": "epoch", "epoch": epoch, **logs})
        assert self._file is not None
        self._file.flush()

    def on_train_end(self, logs: Logs) -> None:
        if self._file is not None:
            self._file.close()


def input_text(logs: Logs) -> str:
    """The input path's figures for a progress line (hvdkit.training.inputmeter): the share
    of the loop spent waiting for data and, where images are decoded, each worker's rate."""
    text = ""
    if "data_wait_share" in logs:
        text += f" data wait {100 * logs['data_wait_share']:.0f}%"
    if "decoded_per_sec_per_worker" in logs:
        text += f" decode {logs['decoded_per_sec_per_worker']:.0f} img/s/worker"
        if "decoder_busy_share" in logs:
            text += f" (busy {100 * logs['decoder_busy_share']:.0f}%)"
    return text


class ProgressBar(Callback):
    """Progress with loss and throughput: a live bar on a terminal, else one line per log
    interval. A step's logs may carry a new `total_steps` (an elastic run that changed size):
    the total follows it, and the ETA is timed from the steps since that change."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        self._bar: Any = None
        self._last_line = 0.0
        self._since: tuple[float, int] = (0.0, 0)  # (time, steps done) the ETA counts from
        self._printed_last = False

    def on_train_begin(self, logs: Logs) -> None:
        self.total = logs["total_steps"]
        self.epochs = logs["epochs"]
        self._since = (time.perf_counter(), 0)
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, file=self.stream, unit="step", dynamic_ncols=True)

    def _retotal(self, total: int, done: int) -> None:
        self.total = total
        self._since = (time.perf_counter(), done - 1)
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def on_step_end(self, step: int, logs: Logs) -> None:
        done = step + 1
        if logs.get("total_steps", self.total) != self.total:
            self._retotal(int(logs["total_steps"]), done)
        text = f"loss {logs['loss']:.4f} acc {logs['accuracy']:.3f} " \
               f"{logs['samples_per_sec']:.0f} samples/s{input_text(logs)}"
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            self._bar.set_postfix_str(f"epoch {logs['epoch'] + 1}/{self.epochs} {text}")
            return
        now = time.perf_counter()
        last = done >= self.total
        if now - self._last_line < self.min_interval_s and not (last and not self._printed_last):
            return
        self._last_line, self._printed_last = now, last
        since_time, since_done = self._since
        rate = (done - since_done) / max(now - since_time, 1e-9)
        eta = max(self.total - done, 0) / rate
        print(f"[hvdkit] epoch {logs['epoch'] + 1}/{self.epochs} step {done}/{self.total} "
              f"({min(100.0, 100 * done / self.total):.0f}%) {text} eta {eta:.0f}s",
              file=self.stream, flush=True)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        parts = [f"epoch {epoch + 1}/{self.epochs}", f"train loss {logs['train_loss']:.4f}"]
        if "test_accuracy" in logs:
            parts.append(f"test loss {logs['test_loss']:.4f} "
                         f"test accuracy {logs['test_accuracy']:.4f}")
        if "test_perplexity" in logs:
            parts.append(f"test perplexity {logs['test_perplexity']:.3f}")
        parts.append(f"{logs['samples_per_sec']:.0f} samples/s")
        if logs.get("complete") is False:
            parts.append(f"cut short at step {logs['step']}")
        message = "[hvdkit] " + " | ".join(parts)
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def on_train_end(self, logs: Logs) -> None:
        """After a stop (`logs["interrupted"]`), one line with the step reached of the total."""
        if self._bar is not None:
            self._bar.close()
        if logs.get("interrupted"):
            done = int(logs["steps"])
            print(f"[hvdkit] stopped at step {done}/{self.total} "
                  f"({100 * done / max(self.total, 1):.0f}%)", file=self.stream, flush=True)
