"""The input pipeline of masked image modelling: augmented images, masks, targets."""

import numpy as np

from keras_taskrobust.vision.patch_masking import masked_count


def masked_image_dataset(
    images,
    model,
    mask_ratio=0.5,
    batch_size=64,
    augmentation=None,
    shuffle=True,
    new_masks_each_epoch=True,
    drop_remainder=False,
    seed=0,
):
    """A `tf.data.Dataset` of `(x, y, sample_weight)` batches for a `MaskedImageModel`.

    Each batch holds:

    - `x = {"images": images, "mask": mask}`: the (augmented) clean images
      and a random mask `[batch, num_patches]` with exactly
      `round(mask_ratio * num_patches)` ones per image (1 = masked);
    - `y = {target name: images}`: the same clean images for every target
      (each `RecoveryLoss` computes its target from them in the training
      step);
    - `sample_weight = {target name: mask}`: only masked patches count in
      the loss.

    Augmentation runs here, in `tf.data`, before the targets are computed,
    so the targets always match the image the model sees. Keras 3's image
    preprocessing layers (`keras.layers.RandomTranslation`, `RandomZoom`,
    `RandomRotation`, `RandomContrast`, ..., or a `keras.layers.Pipeline`
    of them) work here on every backend, and so do KerasCV's augmentation
    layers (`keras_cv.layers.RandAugment`, `RandomFlip`, ...; install
    `keras-taskrobust[cv]`), which cannot run inside a JAX model.

    The masks come from `seed` alone (stateless random numbers, one seed per
    batch): two models trained or evaluated on datasets made with the same
    arguments see the same masks.

    Args:
        images: float images `[N, H, W, C]` in `[0, 1]` (uint8 images are
            divided by 255), or a `tf.data.Dataset` of single images (or of
            dicts holding them under `"image"`, as TFDS gives them).
        model: the `MaskedImageModel` (its patch grid and target names).
        mask_ratio: the fraction of patches masked in every image, in
            `(0, 1)`. Defaults to 0.5.
        batch_size: the batch size. Defaults to 64.
        augmentation: a Keras layer applied to each batch of images in
            training mode, or `None`. Defaults to `None`.
        shuffle: shuffle the images (again each epoch). Defaults to `True`.
        new_masks_each_epoch: draw new masks at each pass over the data;
            with `False` every pass has the same masks (for evaluation).
            Defaults to `True`.
        drop_remainder: drop a last, smaller batch (on JAX and TensorFlow
            a batch of a new size compiles the step again). Defaults to
            `False`.
        seed: the seed of the shuffling and the masks. Defaults to 0.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Example:

    >>> import numpy as np, keras_hub
    >>> from keras_taskrobust.vision import MaskedImageModel
    >>> vit = keras_hub.models.ViTBackbone(
    ...     image_shape=(8, 8, 1), patch_size=2, num_layers=1, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32)
    >>> mim = MaskedImageModel(vit, decoder_dim=16)
    >>> data = masked_image_dataset(np.random.rand(10, 8, 8, 1), mim, batch_size=4)
    >>> x, y, sample_weight = next(iter(data))
    >>> int(x["mask"].numpy().sum(axis=1)[0]), sorted(y) == sorted(mim.target_names)
    (8, True)
    """
    import tensorflow as tf

    count = masked_count(model.num_patches, mask_ratio)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size}.")
    if augmentation is not None and not callable(augmentation):
        raise TypeError(
            "`augmentation` must be a Keras layer (e.g. `keras.layers.RandomTranslation(0.1, 0.1)` "
            f"or a `keras.layers.Pipeline`) or None; got {augmentation!r}."
        )
    dataset = _image_dataset(images, model.image_shape, tf)
    if shuffle:
        size = dataset.cardinality()
        buffer = int(size) if size > 0 else 10_000
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    if augmentation is not None:
        # Sequential: the layer's random state advances once per batch, in
        # order, so that a seed gives the same augmentations every run.
        dataset = dataset.map(lambda x: augmentation(x, training=True))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=bool(new_masks_each_epoch))
    names = list(model.target_names)
    num_patches = model.num_patches

    def with_mask(batch, batch_seed):
        shape = (tf.shape(batch)[0], num_patches)
        noise = tf.random.stateless_uniform(shape, seed=tf.stack([batch_seed, tf.cast(seed, tf.int64)]))
        ranks = tf.argsort(tf.argsort(noise, axis=1), axis=1)
        mask = tf.cast(ranks < count, tf.float32)
        return {"images": batch, "mask": mask}, {n: batch for n in names}, {n: mask for n in names}

    dataset = tf.data.Dataset.zip((dataset, seeds)).map(with_mask, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _image_dataset(images, image_shape, tf):
    """An unbatched dataset of float32 images in [0, 1] of `image_shape`."""
    if isinstance(images, tf.data.Dataset):
        dataset = images
        if isinstance(dataset.element_spec, dict):
            if "image" not in dataset.element_spec:
                raise ValueError(
                    f"The dataset's elements are dicts with keys {sorted(dataset.element_spec)}; "
                    "masked_image_dataset reads the images under 'image'."
                )
            dataset = dataset.map(lambda e: e["image"])
        spec = dataset.element_spec
        if not hasattr(spec, "shape") or tuple(spec.shape) != tuple(image_shape):
            raise ValueError(
                f"The dataset's images have shape {getattr(spec, 'shape', spec)} but the model "
                f"takes single images of shape {tuple(image_shape)} (unbatch a batched dataset)."
            )
        scale = 1.0 / 255.0 if spec.dtype == tf.uint8 else 1.0
        return dataset.map(lambda x: tf.cast(x, tf.float32) * scale)
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"The images have shape {images.shape} but the model takes [N, "
            f"{', '.join(str(s) for s in image_shape)}]."
        )
    images = images.astype("float32") / 255.0 if images.dtype == np.uint8 else images.astype("float32")
    return tf.data.Dataset.from_tensor_slices(images)
