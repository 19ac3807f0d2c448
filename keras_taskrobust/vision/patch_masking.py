"""Random patch masks, and the layer that applies them to images."""

import keras
import numpy as np
from keras import ops

from keras_taskrobust.vision.recovery_target import check_image_shape
from keras_taskrobust.vision.recovery_target import standardize_patch_size


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class PatchMasking(keras.layers.Layer):
    """Replaces the masked patches of images by a learned fill value.

    `call(images, mask)`: `images` `[batch, H, W, C]`, `mask`
    `[batch, num_patches]` with 1 for a masked patch and 0 for a visible
    one (patches row by row). Every pixel of a masked patch becomes the
    fill value, a trainable vector of one value per channel (starting at
    0). Behind a linear patch embedding (a ViT's) a constant patch is one
    embedding: this is SimMIM's learned mask token, placed in pixel space
    so that any backbone that takes images can be used as it is.

    Args:
        patch_size: an int or `(height, width)`.
        **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = standardize_patch_size(patch_size)

    def build(self, images_shape, mask_shape=None):
        check_image_shape(images_shape, self.patch_size, "PatchMasking")
        self.fill = self.add_weight(shape=(images_shape[-1],), initializer="zeros", name="fill")

    def call(self, images, mask):
        ph, pw = self.patch_size
        _, height, width, _ = images.shape
        gh, gw = height // ph, width // pw
        if mask.shape[-1] is not None and mask.shape[-1] != gh * gw:
            raise ValueError(
                f"PatchMasking: the mask has {mask.shape[-1]} entries per image but "
                f"{height} x {width} images have {gh * gw} patches of {ph} x {pw}."
            )
        mask = ops.reshape(ops.cast(mask, images.dtype), (-1, gh, gw, 1))
        mask = ops.repeat(ops.repeat(mask, ph, axis=1), pw, axis=2)
        fill = ops.cast(self.fill, images.dtype)
        return images * (1.0 - mask) + fill * mask

    def compute_output_shape(self, images_shape, mask_shape=None):
        return images_shape

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


def random_patch_mask(num_images, num_patches, mask_ratio, seed=None):
    """Random masks with exactly `round(mask_ratio * num_patches)` ones per row.

    Args:
        num_images: the number of masks (rows).
        num_patches: the number of patches per image.
        mask_ratio: the fraction of patches to mask, in `(0, 1)`.
        seed: an int or a `numpy.random.Generator`. Defaults to `None`.

    Returns:
        A float32 array `[num_images, num_patches]`, 1 for a masked patch.
    """
    count = masked_count(num_patches, mask_ratio)
    rng = np.random.default_rng(seed)
    ranks = np.argsort(np.argsort(rng.random((num_images, num_patches)), axis=1), axis=1)
    return (ranks < count).astype("float32")


def masked_count(num_patches, mask_ratio):
    """The number of masked patches per image, at least 1 and at most all but 1."""
    if int(num_patches) != num_patches or num_patches < 2:
        raise ValueError(f"Masking needs at least 2 patches per image; got {num_patches}.")
    if not 0 < mask_ratio < 1:
        raise ValueError(
            f"`mask_ratio` is the fraction of patches to mask, in (0, 1); got {mask_ratio}."
        )
    return int(min(max(round(mask_ratio * num_patches), 1), num_patches - 1))
