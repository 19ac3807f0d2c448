"""Histograms of gradient orientations per patch: the HOG target of MaskFeat."""

import math

import numpy as np
from keras import ops

from keras_taskrobust.vision.recovery_target import RecoveryTarget
from keras_taskrobust.vision.recovery_target import patchify
from keras_taskrobust.vision.recovery_target import register


@register
class GradientHistogramTarget(RecoveryTarget):
    """A histogram of the image gradient's orientations in each patch (HOG-like).

    The image is turned grey (the mean of its channels) and differentiated
    as `numpy.gradient` does: central differences `(x[i+1] - x[i-1]) / 2`
    inside, one-sided differences at the borders. Each pixel votes for the
    orientation of its gradient, unsigned (in `[0, pi)`: an edge and the
    same edge with dark and bright swapped are alike), with the gradient's
    magnitude as weight. The `num_bins` bins are centred at
    `(j + 1/2) * pi / num_bins`; a pixel's vote is shared between the two
    nearest bins in proportion to its closeness (linear interpolation, as
    in HOG, so the target moves smoothly with the image). The votes of a
    patch's pixels are summed and the histogram `h` is scaled to
    `h * sqrt(num_bins) / sqrt(|h|^2 + epsilon)` (unit mean square; a flat
    patch gives 0), as MaskFeat (Wei et al. 2022) normalises HOG per patch.

    Recovering it takes the edge structure of the patch -- which
    orientations its strokes have -- and nothing of its brightness or
    contrast polarity.

    Args:
        num_bins: the number of orientation bins. Defaults to 9 (HOG's).
        epsilon: added to the squared norm of the histogram (in units of
            the gradient magnitude of images in `[0, 1]`, summed over a
            patch): patches with almost no gradient stay near 0. Defaults to
            `1e-2`.

    Example:

    >>> import numpy as np
    >>> target = GradientHistogramTarget(num_bins=6)
    >>> tuple(target(np.random.rand(2, 8, 8, 3), patch_size=4).shape)
    (2, 4, 6)
    """

    name = "gradient_histogram"

    def __init__(self, num_bins=9, epsilon=1e-2):
        if int(num_bins) != num_bins or num_bins < 2:
            raise ValueError(f"GradientHistogramTarget: `num_bins` must be an integer >= 2; got {num_bins}.")
        if epsilon < 0:
            raise ValueError(f"GradientHistogramTarget: `epsilon` must be >= 0; got {epsilon}.")
        self.num_bins = int(num_bins)
        self.epsilon = float(epsilon)

    def dim(self, patch_size, channels):
        return self.num_bins

    def call(self, images, patch_size):
        grey = ops.mean(images, axis=-1)
        if grey.shape[1] < 2 or grey.shape[2] < 2:
            raise ValueError(
                f"GradientHistogramTarget needs images of at least 2 x 2 pixels; got {grey.shape[1]} x {grey.shape[2]}."
            )
        dy, dx = _gradient(grey, axis=1), _gradient(grey, axis=2)
        magnitude = ops.sqrt(dx * dx + dy * dy)
        n = self.num_bins
        # Bin coordinate of the orientation; bin j is centred at j.
        position = ops.arctan2(dy, dx) * (n / math.pi) - 0.5
        centres = ops.convert_to_tensor(np.arange(n, dtype="float32"))
        distance = ops.mod(ops.abs(ops.expand_dims(position, -1) - centres), float(n))
        distance = ops.minimum(distance, n - distance)  # orientations wrap at pi
        votes = ops.relu(1.0 - distance) * ops.expand_dims(magnitude, -1)  # [B, H, W, n]
        ph, pw = patch_size
        per_pixel = ops.reshape(patchify(votes, patch_size), (-1, votes.shape[1] * votes.shape[2] // (ph * pw), ph * pw, n))
        histogram = ops.sum(per_pixel, axis=2)
        norm = ops.sqrt(ops.sum(histogram * histogram, axis=-1, keepdims=True) + self.epsilon)
        return histogram * (math.sqrt(n) / norm)

    def get_config(self):
        return {"num_bins": self.num_bins, "epsilon": self.epsilon}


def _gradient(x, axis):
    """`numpy.gradient(x, axis=axis)` for `axis` 1 or 2 of a rank-3 tensor."""
    take = (lambda a, b: x[:, a:b]) if axis == 1 else (lambda a, b: x[:, :, a:b])
    first = take(1, 2) - take(0, 1)
    inside = (take(2, None) - take(None, -2)) * 0.5
    last = take(-1, None) - take(-2, -1)
    return ops.concatenate([first, inside, last], axis=axis)
