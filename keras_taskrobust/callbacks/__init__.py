"""Keras callbacks: turn the task-weight updates on, measure downstream transfer, show progress."""

from keras_taskrobust.callbacks.downstream_suite import DownstreamSuite
from keras_taskrobust.callbacks.mirror_descent import MirrorDescent
from keras_taskrobust.callbacks.task_progbar_logger import TaskProgbarLogger

__all__ = ["DownstreamSuite", "MirrorDescent", "TaskProgbarLogger"]
