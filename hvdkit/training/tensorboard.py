"""TensorBoard logs: rank 0 writes `<run dir>/tensorboard/` event files as it trains.

Step metrics go under `train/` (loss, accuracy, lr, samples_per_sec), epoch metrics under
`epoch/` (train_loss, test_loss, test_accuracy, ...), and the resolved recipe, framework and
world size as hyper-parameters (TensorBoard's HPARAMS tab). Written with the `tensorboard`
package's event writer and protocol buffers alone: no framework is imported. `hvdkit train
--no-tensorboard` turns it off. View with `tensorboard --logdir runs/`.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hvdkit.training.callbacks import Callback, Logs

STEP_KEYS = ("loss", "accuracy", "lr", "samples_per_sec", "step_time")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists become their text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value) if isinstance(value, list | tuple) or value is None else value
    return flat


class TensorBoard(Callback):
    """A Callback writing scalars and hyper-parameters to event files in `log_dir`."""

    def __init__(self, log_dir: str | Path, hparams: dict[str, Any] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.hparams = flatten(hparams or {})
        self._writer: Any = None

    def on_train_begin(self, logs: Logs) -> None:
        try:
            self._writer = EventFile(self.log_dir)
        except ImportError:
            print("hvdkit: warning: the tensorboard package is missing: no TensorBoard logs "
                  "(pip install tensorboard, or --no-tensorboard)", file=sys.stderr, flush=True)
            return
        if self.hparams:
            for summary in _hparams_summaries(self.hparams):
                self._writer.add(summary, 0)

    def _scalars(self, prefix: str, logs: Logs, step: int, keys: tuple[str, ...] | None) -> None:
        if self._writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=f"{prefix}/{key}", simple_value=float(value))
                  for key, value in logs.items()
                  if (keys is None or key in keys) and isinstance(value, int | float)
                  and not isinstance(value, bool)]
        if values:
            self._writer.add(Summary(value=values), step)

    def on_step_end(self, step: int, logs: Logs) -> None:
        self._scalars("train", logs, step + 1, STEP_KEYS)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self._scalars("epoch", {k: v for k, v in logs.items() if k != "step"},
                      int(logs.get("step", epoch)), None)
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs: Logs) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EventFile:
    """One `events.out.tfevents.*` file, written in the calling thread. (The package's own
    EventFileWriter would import TensorFlow, when installed, for its file system layer.)"""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._records = RecordWriter(open(log_dir / name, "wb"))  # noqa: SIM115 (closed below)
        self._event = Event
        self._records.write(Event(wall_time=time.time(), file_version="brain.Event:2")
                            .SerializeToString())

    def add(self, summary: Any, step: int) -> None:
        self._records.write(self._event(wall_time=time.time(), step=step, summary=summary)
                            .SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


def _hparams_summaries(hparams: dict[str, Any]) -> list[Any]:
    """The HPARAMS plugin's experiment and session-start summaries for `hparams`."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, value in hparams.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[name].number_value = float(value)
        else:
            start.hparams[name].string_value = str(value)
        infos.append(api_pb2.HParamInfo(name=name))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=f"epoch/{tag}"))
               for tag in ("test_accuracy", "test_loss", "train_loss")]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    out = []
    for tag, data in (
        (metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        (metadata.SESSION_START_INFO_TAG,
         plugin_data_pb2.HParamsPluginData(session_start_info=start)),
    ):
        data.version = metadata.PLUGIN_DATA_VERSION
        out.append(Summary(value=[Summary.Value(
            tag=tag, metadata=metadata.create_summary_metadata(data))]))
    return out
