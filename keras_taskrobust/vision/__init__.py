"""Masked image modelling with several recovery targets, each a task."""

from keras_taskrobust.vision.gradient_histogram_target import GradientHistogramTarget
from keras_taskrobust.vision.low_frequency_target import LowFrequencyTarget
from keras_taskrobust.vision.masked_image_dataset import masked_image_dataset
from keras_taskrobust.vision.masked_image_model import MaskedImageModel
from keras_taskrobust.vision.patch_masking import PatchMasking
from keras_taskrobust.vision.patch_masking import random_patch_mask
from keras_taskrobust.vision.pixel_target import PixelTarget
from keras_taskrobust.vision.recovery_loss import RecoveryLoss
from keras_taskrobust.vision.recovery_target import RecoveryTarget
from keras_taskrobust.vision.recovery_target import get as get_target
from keras_taskrobust.vision.recovery_target import patchify

__all__ = [
    "GradientHistogramTarget",
    "LowFrequencyTarget",
    "MaskedImageModel",
    "PatchMasking",
    "PixelTarget",
    "RecoveryLoss",
    "RecoveryTarget",
    "get_target",
    "masked_image_dataset",
    "patchify",
    "random_patch_mask",
]
