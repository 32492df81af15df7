"""Keras 3 state for Horovod elastic training.

Horovod's `TensorFlowKerasState` expects `tf.Variable`s; Keras 3 variables are not, so the
snapshot goes through the adapter's numpy `state()` and the sync through `v.value`.
"""

from __future__ import annotations

from typing import Any


def keras_elastic_state(adapter: Any, values: dict[str, Any]) -> Any:
    """An elastic object state that also carries the adapter's Keras model and optimizer."""
    import horovod.tensorflow.elastic as elastic

    class KerasState(elastic.ObjectState):
        def __init__(self) -> None:
            self._snapshot = adapter.state()
            super().__init__(bcast_object=adapter.hvd.broadcast_object,
                             get_rank=adapter.hvd.rank, **values)

        def save(self) -> None:
            self._snapshot = adapter.state()
            super().save()

        def restore(self) -> None:
            adapter.load_state(self._snapshot)
            super().restore()

        def sync(self) -> None:
            adapter.broadcast_state(root_rank=0)
            super().sync()

    return KerasState()
