"""Data for task-robust training."""

from keras_taskrobust.data.synthetic import synthetic_tasks
