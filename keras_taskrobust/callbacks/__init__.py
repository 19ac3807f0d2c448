"""Keras callbacks: turn the task-weight updates on, measure downstream transfer."""

from keras_taskrobust.callbacks.downstream_suite import DownstreamSuite
from keras_taskrobust.callbacks.mirror_descent import MirrorDescent

__all__ = ["DownstreamSuite", "MirrorDescent"]
