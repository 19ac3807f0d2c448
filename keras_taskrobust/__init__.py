"""Task-robust pre-training for Keras 3: minimise the worst of K task losses."""

from keras_taskrobust import callbacks
from keras_taskrobust import metrics
from keras_taskrobust import rules
from keras_taskrobust.callbacks import DownstreamTask
from keras_taskrobust.models import MinimaxModel

__version__ = "0.1.0"
