"""The low-frequency content of the image around each patch."""

import numpy as np
from keras import ops

from keras_taskrobust.vision.recovery_target import RecoveryTarget
from keras_taskrobust.vision.recovery_target import patchify
from keras_taskrobust.vision.recovery_target import register


@register
class LowFrequencyTarget(RecoveryTarget):
    """The image blurred with a wide Gaussian, standardised, cut into patches.

    The image is low-pass filtered with a Gaussian of standard deviation
    `sigma` pixels. At the borders the Gaussian is renormalised over the
    pixels inside the image (each output pixel is a weighted mean of image
    pixels, so a flat image stays flat and no dark frame appears). The
    blurred image is then standardised per image, `(b - mean(b)) /
    sqrt(var(b) + epsilon)` over all its pixels and channels, and cut into
    patches like the pixel target.

    Unlike `PixelTarget` (local detail, normalised per patch) and
    `GradientHistogramTarget` (edge orientations), this target holds only
    coarse shape -- where the mass of the image lies -- and keeps each
    patch's brightness relative to the rest of the image. With `sigma` of
    the order of the patch size, a masked patch's blurred content depends
    mostly on its unmasked neighbours: recovering it takes context and
    global shape, not texture.

    Args:
        sigma: the Gaussian's standard deviation in pixels. Defaults to
            `None`: half the larger side of a patch.
        epsilon: added to the blurred image's variance (in squared units of
            images in `[0, 1]`). Defaults to `1e-3`.

    Example:

    >>> import numpy as np
    >>> target = LowFrequencyTarget(sigma=2.0)
    >>> tuple(target(np.random.rand(2, 8, 8, 1), patch_size=4).shape)
    (2, 4, 16)
    """

    name = "low_frequency"

    def __init__(self, sigma=None, epsilon=1e-3):
        if sigma is not None and not sigma > 0:
            raise ValueError(f"LowFrequencyTarget: `sigma` must be > 0 (pixels) or None; got {sigma}.")
        if epsilon < 0:
            raise ValueError(f"LowFrequencyTarget: `epsilon` must be >= 0; got {epsilon}.")
        self.sigma = None if sigma is None else float(sigma)
        self.epsilon = float(epsilon)

    def dim(self, patch_size, channels):
        return patch_size[0] * patch_size[1] * channels

    def blur(self, images, patch_size):
        """The images low-pass filtered, `[batch, H, W, C]`, before standardising."""
        sigma = self.sigma if self.sigma is not None else max(patch_size) / 2.0
        rows = ops.convert_to_tensor(_smoothing_matrix(images.shape[1], sigma))
        columns = ops.convert_to_tensor(_smoothing_matrix(images.shape[2], sigma))
        # The Gaussian is separable, and so is its renormalisation.
        return ops.einsum("hi,bijc,wj->bhwc", rows, images, columns)

    def call(self, images, patch_size):
        blurred = self.blur(images, patch_size)
        mean = ops.mean(blurred, axis=(1, 2, 3), keepdims=True)
        variance = ops.var(blurred, axis=(1, 2, 3), keepdims=True)
        return patchify((blurred - mean) / ops.sqrt(variance + self.epsilon), patch_size)

    def get_config(self):
        return {"sigma": self.sigma, "epsilon": self.epsilon}


def _smoothing_matrix(size, sigma):
    """`[size, size]`: row i holds the Gaussian weights of pixel i, summing to 1."""
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype("float32")
