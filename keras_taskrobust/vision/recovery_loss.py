"""The loss of one recovery target, per patch."""

import keras
from keras import ops

from keras_taskrobust.vision import recovery_target
from keras_taskrobust.vision.recovery_target import standardize_patch_size


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class RecoveryLoss(keras.losses.Loss):
    """Mean squared error between a patch's prediction and its target.

    `y_true` is the batch of clean images `[batch, H, W, C]`; the loss
    computes the target from them (`target(y_true, patch_size)`, no
    gradient) and compares it with `y_pred`, `[batch, num_patches, dim]`.
    The unreduced loss is one value per patch, `[batch, num_patches]`: give
    the patch mask as sample weight and only the masked patches count. The
    reduction defaults to `"mean_with_sample_weight"`, the mean over the
    masked patches, which is also how `MinimaxModel` reduces each task.

    Computing the target inside the loss keeps it in the compiled training
    step of every backend and needs no copy of it in the input pipeline:
    the pipeline gives the same images as `y` for every target.

    Args:
        target: a `RecoveryTarget` or the name of one (`"pixels"`,
            `"gradient_histogram"`, `"low_frequency"`).
        patch_size: the patch size, an int or `(height, width)`.
        reduction: a Keras loss reduction. Defaults to
            `"mean_with_sample_weight"`.
        name: the loss's name. Defaults to `"<target name>_recovery"`.

    Example:

    >>> import numpy as np
    >>> loss = RecoveryLoss("pixels", patch_size=4)
    >>> images = np.random.rand(2, 8, 8, 1).astype("float32")
    >>> mask = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], "float32")
    >>> float(loss(images, np.zeros((2, 4, 16)), sample_weight=mask)) > 0
    True
    """

    def __init__(self, target, patch_size, reduction="mean_with_sample_weight", name=None, dtype=None):
        target = recovery_target.get(target)
        super().__init__(name=name or f"{target.name}_recovery", reduction=reduction, dtype=dtype)
        self.target = target
        self.patch_size = standardize_patch_size(patch_size)

    def call(self, y_true, y_pred):
        target = self.target(y_true, self.patch_size)
        y_pred = ops.convert_to_tensor(y_pred)
        if tuple(y_pred.shape[1:]) != tuple(target.shape[1:]) and None not in y_pred.shape[1:]:
            raise ValueError(
                f"{self.name}: the predictions have shape {tuple(y_pred.shape)} "
                f"but the {self.target.name!r} target of these images has "
                f"shape {tuple(target.shape)} ([batch, patches, dim]); check "
                "that the output and the loss use the same target and patch size."
            )
        error = ops.cast(y_pred, target.dtype) - target
        return ops.mean(error * error, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "target": keras.saving.serialize_keras_object(self.target),
            "patch_size": self.patch_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["target"] = recovery_target.get(config["target"])
        return cls(**config)
