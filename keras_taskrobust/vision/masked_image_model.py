"""Masked image modelling with several recovery targets on a patch-token backbone."""

import keras
from keras import ops

from keras_taskrobust.vision import recovery_target
from keras_taskrobust.vision.patch_masking import PatchMasking
from keras_taskrobust.vision.recovery_loss import RecoveryLoss
from keras_taskrobust.vision.recovery_target import check_image_shape
from keras_taskrobust.vision.recovery_target import standardize_patch_size

DEFAULT_TARGETS = ("pixels", "gradient_histogram", "low_frequency")


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class MaskedImageModel(keras.Model):
    """Masked image modelling on a backbone that turns images into patch tokens.

    The model takes a dict `{"images": [batch, H, W, C], "mask":
    [batch, num_patches]}` (1 = masked) and returns one prediction per
    recovery target, a dict `{target name: [batch, num_patches, dim]}`:

    1. the masked patches of the images are replaced by a learned fill
       value (`PatchMasking`; SimMIM-style: the backbone sees every patch);
    2. the backbone encodes the masked images. Its patch tokens are taken
       from its output: the last `num_patches` tokens of a sequence
       `[batch, tokens, dim]` (the tokens that come first -- a ViT's class
       token, DeiT's distillation token, DINOv2's registers -- are left
       out) or every position of a feature map `[batch, H/ph, W/pw, dim]`;
    3. a light decoder (layer normalisation and one dense layer, shared by
       the targets) and one linear head per target predict each patch's
       target.

    Each output is one task of a `MinimaxModel` in its per-output form
    (`task_key=None`), and `recovery_losses()` gives the matching losses:
    a `RecoveryLoss` per target, which computes the target from the clean
    images (the `y` of every output) and, with the mask as sample weight,
    counts only the masked patches. `masked_image_dataset` builds such
    `(x, y, sample_weight)` batches.

    Any backbone whose output is patch tokens can be used: keras-hub's
    `ViTBackbone` (built from its config, `patch_size` read from it), a
    KerasCV or keras-hub convolutional backbone (`EfficientNetV2Backbone`,
    `ResNetBackbone`, ...) whose last feature map then has one position per
    patch (the patch size is read from the feature map's grid), or your own
    model.

    Args:
        backbone: a `keras.Model` (or layer) mapping images to patch tokens.
        targets: the recovery targets, each a `RecoveryTarget` or a name
            (`"pixels"`: `PixelTarget`; `"gradient_histogram"`:
            `GradientHistogramTarget`; `"low_frequency"`:
            `LowFrequencyTarget`), with distinct names. Defaults to all
            three.
        patch_size: an int or `(height, width)`. Defaults to the backbone's
            `patch_size` attribute (keras-hub's `ViTBackbone` has one), or
            else to the image size over the size of the backbone's feature
            map (a 32 x 32 image to a 4 x 4 map: patches of 8 x 8).
        decoder_dim: the width of the decoder's dense layer. Defaults to 128.
        image_shape: `(H, W, C)`. Defaults to the backbone's input shape.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras_hub
    >>> from keras_taskrobust import MinimaxModel
    >>> vit = keras_hub.models.ViTBackbone(
    ...     image_shape=(8, 8, 1), patch_size=2, num_layers=1, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32)
    >>> mim = MaskedImageModel(vit, decoder_dim=16)
    >>> model = MinimaxModel(mim, task_names=mim.target_names, task_key=None)
    >>> model.compile(optimizer="adam", loss=mim.recovery_losses())
    >>> mim.target_names
    ['pixels', 'gradient_histogram', 'low_frequency']
    """

    def __init__(self, backbone, targets=DEFAULT_TARGETS, patch_size=None, decoder_dim=128, image_shape=None, **kwargs):
        # === Config checks ===
        if not isinstance(backbone, keras.layers.Layer):
            raise TypeError(
                "MaskedImageModel's `backbone` must be a Keras model or layer that "
                f"maps images to patch tokens; got {type(backbone).__name__}."
            )
        if image_shape is None:
            try:
                image_shape = tuple(backbone.input_shape[1:])
            except (AttributeError, ValueError):
                raise ValueError(
                    f"The backbone {backbone.name!r} has no known input shape: "
                    "pass `image_shape=(height, width, channels)`."
                ) from None
        image_shape = tuple(image_shape)
        if patch_size is None:
            patch_size = getattr(backbone, "patch_size", None)
        if patch_size is None:
            patch_size = _feature_map_patch_size(backbone, image_shape)
            if patch_size is None:
                raise ValueError(
                    f"The backbone {backbone.name!r} has no `patch_size` attribute "
                    "and its output is not a feature map that tiles the image: "
                    "pass `patch_size=` (the side of the image patch that one "
                    "token or feature-map position covers)."
                )
        patch_size = standardize_patch_size(patch_size)
        check_image_shape((None, *image_shape), patch_size, "MaskedImageModel")
        targets = [recovery_target.get(t) for t in (list(targets) if isinstance(targets, (list, tuple)) else [targets])]
        names = [t.name for t in targets]
        if not targets or len(set(names)) != len(names):
            raise ValueError(
                f"MaskedImageModel needs recovery targets with distinct names; got {names}. "
                "Each target is one output and one task: give each kind once."
            )
        if int(decoder_dim) != decoder_dim or decoder_dim < 1:
            raise ValueError(f"`decoder_dim` must be a positive integer; got {decoder_dim}.")
        grid = (image_shape[0] // patch_size[0], image_shape[1] // patch_size[1])
        num_patches = grid[0] * grid[1]

        # === Layers ===
        # Made before the functional model and set as attributes after it
        # (torch modules take no attributes before their `__init__`).
        patch_masking = PatchMasking(patch_size, name="patch_masking")
        decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm")
        decoder = keras.layers.Dense(int(decoder_dim), activation="gelu", name="decoder")
        heads = {t.name: keras.layers.Dense(t.dim(patch_size, image_shape[-1]), name=f"{t.name}_head") for t in targets}

        # === Functional Model ===
        images = keras.Input(image_shape, name="images")
        mask = keras.Input((num_patches,), name="mask")
        masked = patch_masking(images, mask)
        tokens = _patch_tokens(backbone(_as_backbone_input(backbone, masked)), num_patches, grid, backbone.name)
        hidden = decoder(decoder_norm(tokens))
        outputs = {name: head(hidden) for name, head in heads.items()}
        super().__init__(inputs={"images": images, "mask": mask}, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.patch_masking = patch_masking
        self.decoder_norm = decoder_norm
        self.decoder = decoder
        self.heads = heads

        # === Config ===
        self.targets = targets
        self.target_names = names
        self.patch_size = patch_size
        self.decoder_dim = int(decoder_dim)
        self.image_shape = image_shape
        self.grid = grid
        self.num_patches = num_patches

    def recovery_losses(self):
        """`{target name: RecoveryLoss}`, the losses to compile with."""
        return {t.name: RecoveryLoss(t, self.patch_size) for t in self.targets}

    def compute_targets(self, images):
        """`{target name: [batch, num_patches, dim]}` of clean images."""
        return {t.name: t(images, self.patch_size) for t in self.targets}

    def get_config(self):
        # Rebuilt from these arguments (as keras-hub's tasks), not from the graph.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "targets": [keras.saving.serialize_keras_object(t) for t in self.targets],
            "patch_size": self.patch_size,
            "decoder_dim": self.decoder_dim,
            "image_shape": self.image_shape,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"], custom_objects=custom_objects)
        config["targets"] = [recovery_target.get(t) for t in config["targets"]]
        return cls(**config)


def _as_backbone_input(backbone, images):
    """The images as the backbone takes them: a tensor, or a dict of one entry (DINOv2)."""
    try:
        structure = backbone.input
    except (AttributeError, ValueError):  # a subclassed layer has no `input`
        return images
    if isinstance(structure, dict) and len(structure) == 1:
        return {next(iter(structure)): images}
    return images


def _feature_map_patch_size(backbone, image_shape):
    """`(H / h, W / w)` if the backbone maps an image to an `h x w` feature map, else `None`.

    Convolutional backbones (KerasCV's and keras-hub's) record no patch
    size; their output's grid on one image gives it. A symbolic call: no
    computation runs.
    """
    outputs = backbone(_as_backbone_input(backbone, keras.KerasTensor((1, *image_shape))))
    if isinstance(outputs, (dict, list, tuple)) or len(outputs.shape) != 4:
        return None
    grid = tuple(outputs.shape[1:3])
    if not all(grid) or image_shape[0] % grid[0] or image_shape[1] % grid[1]:
        return None
    return (image_shape[0] // grid[0], image_shape[1] // grid[1])


def _patch_tokens(outputs, num_patches, grid, backbone_name):
    """The backbone's patch tokens, `[batch, num_patches, dim]`."""
    if isinstance(outputs, dict) or isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"The backbone {backbone_name!r} returns several outputs; "
            "MaskedImageModel needs one tensor of patch tokens. Wrap the "
            "backbone in a model that returns only its token sequence or last "
            "feature map."
        )
    shape = tuple(outputs.shape)
    if len(shape) == 4 and tuple(shape[1:3]) == grid:
        return ops.reshape(outputs, (-1, num_patches, shape[-1]))
    if len(shape) == 3 and shape[1] is not None and shape[1] >= num_patches:
        # A class token (ViT) or register tokens come before the patch tokens.
        return outputs[:, shape[1] - num_patches :]
    raise ValueError(
        f"The backbone {backbone_name!r} returns shape {shape}, which holds no "
        f"patch tokens for a {grid[0]} x {grid[1]} grid of patches: expected "
        f"[batch, tokens >= {num_patches}, dim] or [batch, {grid[0]}, {grid[1]}, dim]. "
        "Check `patch_size` (it must match the backbone's)."
    )
