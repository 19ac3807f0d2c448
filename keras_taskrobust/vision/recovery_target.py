"""The base class of what a masked patch is asked to recover."""

import keras
from keras import ops


class RecoveryTarget:
    """What masked-image modelling asks the model to recover for each patch.

    A target maps a batch of images `[batch, height, width, channels]` to one
    vector per patch, `[batch, num_patches, dim]`, with `keras.ops` only, so
    it is computed inside the compiled training step on every backend (by
    `RecoveryLoss`, from the clean images). Patches are taken row by row,
    as a ViT's patch embedding orders its tokens.

    Each target is scaled so that predicting zeros costs a mean squared
    error of about 1 on a patch with some structure: the recovery losses of
    different targets are then on one scale, which a rule that weights the
    worst task needs (otherwise it weights the target with the largest
    units).

    Subclasses set `name` (the default output and task name) and implement
    `dim(patch_size, channels)` and `call(images, patch_size)`.
    """

    name = None

    def dim(self, patch_size, channels):
        """The size of one patch's target vector."""
        raise NotImplementedError

    def call(self, images, patch_size):
        """The targets, `[batch, num_patches, dim]`, of float images."""
        raise NotImplementedError

    def __call__(self, images, patch_size):
        patch_size = standardize_patch_size(patch_size)
        images = ops.convert_to_tensor(images, "float32")
        check_image_shape(images.shape, patch_size, type(self).__name__)
        return ops.stop_gradient(self.call(images, patch_size))

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


def standardize_patch_size(patch_size):
    """`(height, width)` of a patch from an int or a pair of ints."""
    if isinstance(patch_size, int):
        patch_size = (patch_size, patch_size)
    try:
        ph, pw = (int(p) for p in patch_size)
    except (TypeError, ValueError):
        raise ValueError(f"`patch_size` must be an int or a pair of ints; got {patch_size!r}.") from None
    if ph < 1 or pw < 1 or (ph, pw) != tuple(patch_size):
        raise ValueError(f"`patch_size` must hold positive integers; got {patch_size!r}.")
    return ph, pw


def check_image_shape(shape, patch_size, who):
    """Raises a `ValueError` unless `shape` is `[batch, H, W, C]` tiled by patches."""
    ph, pw = patch_size
    if len(shape) != 4 or any(s is None for s in shape[1:]):
        raise ValueError(
            f"{who} takes a batch of images [batch, height, width, channels] "
            f"with known height, width and channels; got shape {tuple(shape)}. "
            "Add the channel axis to grey images (`images[..., None]`)."
        )
    height, width = shape[1], shape[2]
    if height % ph or width % pw:
        raise ValueError(
            f"{who}: images of {height} x {width} pixels are not tiled by "
            f"patches of {ph} x {pw}; use a patch size that divides the image "
            "size (e.g. 4 for 28 x 28 images) or resize the images."
        )


def patchify(images, patch_size):
    """`[batch, H, W, C]` -> `[batch, (H/ph) * (W/pw), ph * pw * C]`, row by row.

    Within a patch the values are ordered by row, column, then channel.
    """
    ph, pw = patch_size
    _, height, width, channels = images.shape
    gh, gw = height // ph, width // pw
    x = ops.reshape(images, (-1, gh, ph, gw, pw, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * gw, ph * pw * channels))


_TARGETS = {}


def register(cls):
    """Registers a target class under its `name` (for `get`) and with Keras."""
    _TARGETS[cls.name] = cls
    return keras.saving.register_keras_serializable(package="keras_taskrobust")(cls)


def get(identifier):
    """A `RecoveryTarget` from an instance, a registered name or a Keras config."""
    if isinstance(identifier, RecoveryTarget):
        return identifier
    if isinstance(identifier, str) and identifier in _TARGETS:
        return _TARGETS[identifier]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        target = keras.saving.deserialize_keras_object(identifier)
        if isinstance(target, RecoveryTarget):
            return target
    raise ValueError(
        f"Unknown recovery target {identifier!r}. Pass a RecoveryTarget "
        f"(e.g. `GradientHistogramTarget(num_bins=9)`) or one of the names "
        f"{sorted(_TARGETS)}."
    )
