"""Data for task-robust training: task mixtures, offline TFDS datasets."""

from keras_taskrobust.data.digit_domains import DOMAINS
from keras_taskrobust.data.digit_domains import DigitDomains
from keras_taskrobust.data.digit_domains import load_domains
from keras_taskrobust.data.digit_domains import render
from keras_taskrobust.data.synthetic import synthetic_tasks
from keras_taskrobust.data.task_mixture import mix_tasks
from keras_taskrobust.data.task_mixture import stratified_counts
from keras_taskrobust.data.task_mixture import task_probabilities
from keras_taskrobust.data.task_mixture import with_task_ids

__all__ = [
    "DOMAINS",
    "DigitDomains",
    "load_domains",
    "mix_tasks",
    "render",
    "stratified_counts",
    "synthetic_tasks",
    "task_probabilities",
    "with_task_ids",
]
