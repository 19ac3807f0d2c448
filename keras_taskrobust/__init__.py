"""Task-robust pre-training for Keras 3: minimise the worst of K task losses."""

from keras_taskrobust import callbacks
from keras_taskrobust import downstream
from keras_taskrobust import metrics
from keras_taskrobust import rules
from keras_taskrobust.callbacks import DownstreamSuite
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.downstream import DownstreamTask
from keras_taskrobust.downstream import evaluate_transfer
from keras_taskrobust.models import MinimaxModel

__version__ = "0.1.0"

__all__ = [
    "DownstreamSuite",
    "DownstreamTask",
    "MinimaxModel",
    "MirrorDescent",
    "callbacks",
    "downstream",
    "evaluate_transfer",
    "metrics",
    "rules",
]
