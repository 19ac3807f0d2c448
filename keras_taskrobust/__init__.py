"""Task-robust pre-training for Keras 3: minimise the worst of K task losses."""

import os
import sys

from keras_taskrobust import cli

# Run as the command line (`keras-taskrobust`, `python -m keras_taskrobust`,
# whose argv[0] is "-m" while the package loads), TensorFlow's start-up
# messages are silenced before `import keras` loads it.
if sys.argv and (os.path.basename(sys.argv[0]) == cli.PROG or sys.argv[0] == "-m"):
    cli.quiet_tensorflow(sys.argv[1:])

from keras_taskrobust import callbacks  # noqa: E402
from keras_taskrobust import downstream  # noqa: E402
from keras_taskrobust import metrics  # noqa: E402
from keras_taskrobust import rules  # noqa: E402
from keras_taskrobust.callbacks import DownstreamSuite  # noqa: E402
from keras_taskrobust.callbacks import MirrorDescent  # noqa: E402
from keras_taskrobust.downstream import DownstreamTask  # noqa: E402
from keras_taskrobust.downstream import evaluate_transfer  # noqa: E402
from keras_taskrobust.models import MinimaxModel  # noqa: E402

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
