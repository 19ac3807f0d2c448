"""Metrics that track each task's loss and weight."""

from keras_taskrobust.metrics.task_losses import TaskLosses

__all__ = [
    "TaskLosses",
]
