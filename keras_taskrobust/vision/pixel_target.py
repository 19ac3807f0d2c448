"""Normalised pixels: the recovery target of MAE."""

from keras import ops

from keras_taskrobust.vision.recovery_target import RecoveryTarget
from keras_taskrobust.vision.recovery_target import patchify
from keras_taskrobust.vision.recovery_target import register


@register
class PixelTarget(RecoveryTarget):
    """The pixels of each patch, normalised by the patch's mean and spread.

    For a patch with values `p` (all its pixels and channels, flattened by
    row, column and channel) the target is
    `(p - mean(p)) / sqrt(var(p) + epsilon)`, the normalised pixels of MAE
    (He et al. 2022, "norm_pix_loss"). Recovering it takes local detail:
    where the strokes run inside the patch and how sharp they are, but not
    the patch's brightness. A flat patch has the target 0.

    Args:
        normalize: normalise each patch as above; with `False` the target is
            the raw pixels. Defaults to `True`.
        epsilon: added to the patch's variance, in squared units of the
            pixel values (images in `[0, 1]`): patches with a standard
            deviation well below `sqrt(epsilon)` (faint noise, a stray grey
            pixel) are not blown up to unit variance. Defaults to `1e-2`.

    Example:

    >>> import numpy as np
    >>> target = PixelTarget()
    >>> tuple(target(np.random.rand(2, 8, 8, 1), patch_size=4).shape)
    (2, 4, 16)
    """

    name = "pixels"

    def __init__(self, normalize=True, epsilon=1e-2):
        if epsilon < 0:
            raise ValueError(f"PixelTarget: `epsilon` must be >= 0; got {epsilon}.")
        self.normalize = bool(normalize)
        self.epsilon = float(epsilon)

    def dim(self, patch_size, channels):
        return patch_size[0] * patch_size[1] * channels

    def call(self, images, patch_size):
        patches = patchify(images, patch_size)
        if not self.normalize:
            return patches
        mean = ops.mean(patches, axis=-1, keepdims=True)
        variance = ops.var(patches, axis=-1, keepdims=True)
        return (patches - mean) / ops.sqrt(variance + self.epsilon)

    def get_config(self):
        return {"normalize": self.normalize, "epsilon": self.epsilon}
