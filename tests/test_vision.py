"""Masked image modelling: targets against NumPy, masking, per-target tasks, the recipe."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.vision import GradientHistogramTarget
from keras_taskrobust.vision import LowFrequencyTarget
from keras_taskrobust.vision import MaskedImageModel
from keras_taskrobust.vision import PatchMasking
from keras_taskrobust.vision import PixelTarget
from keras_taskrobust.vision import RecoveryLoss
from keras_taskrobust.vision import masked_image_dataset
from keras_taskrobust.vision import patchify
from keras_taskrobust.vision import random_patch_mask

keras_hub = pytest.importorskip("keras_hub")

# A tiny image batch: 2 images of 4 x 6 pixels, 2 channels, patches of 2 x 3.
PATCH = (2, 3)
IMAGES = np.random.default_rng(7).random((2, 4, 6, 2)).astype("float32")


# --- NumPy references, written pixel by pixel -----------------------------


def numpy_patches(images, patch):
    """`[N, patches, ph * pw * C]`, patches row by row, values by row, column, channel."""
    ph, pw = patch
    n, h, w, _ = images.shape
    out = []
    for i in range(n):
        row = []
        for top in range(0, h, ph):
            for left in range(0, w, pw):
                row.append(images[i, top : top + ph, left : left + pw, :].reshape(-1))
        out.append(row)
    return np.asarray(out, "float64")


def numpy_pixels(images, patch, epsilon=1e-2):
    p = numpy_patches(images.astype("float64"), patch)
    return (p - p.mean(-1, keepdims=True)) / np.sqrt(p.var(-1, keepdims=True) + epsilon)


def numpy_gradient_histogram(images, patch, num_bins, epsilon=1e-2):
    grey = images.astype("float64").mean(-1)
    ph, pw = patch
    n, h, w = grey.shape
    out = np.zeros((n, (h // ph) * (w // pw), num_bins))
    width = np.pi / num_bins
    for i in range(n):
        gy, gx = np.gradient(grey[i])
        for r in range(h):
            for c in range(w):
                angle = np.arctan2(gy[r, c], gx[r, c]) % np.pi  # unsigned, [0, pi)
                patch_index = (r // ph) * (w // pw) + c // pw
                for j in range(num_bins):
                    gap = abs(angle - (j + 0.5) * width)
                    gap = min(gap, np.pi - gap) / width
                    out[i, patch_index, j] += max(0.0, 1.0 - gap) * np.hypot(gx[r, c], gy[r, c])
    norm = np.sqrt((out**2).sum(-1, keepdims=True) + epsilon)
    return out * np.sqrt(num_bins) / norm


def numpy_low_frequency(images, patch, sigma, epsilon=1e-3):
    x = images.astype("float64")
    n, h, w, _ = x.shape
    blurred = np.zeros_like(x)
    for r in range(h):
        for c in range(w):
            weights = np.exp(-((np.arange(h)[:, None] - r) ** 2 + (np.arange(w)[None, :] - c) ** 2) / (2 * sigma**2))
            blurred[:, r, c, :] = np.einsum("ij,nijc->nc", weights, x) / weights.sum()
    mean = blurred.mean(axis=(1, 2, 3), keepdims=True)
    var = blurred.var(axis=(1, 2, 3), keepdims=True)
    return numpy_patches((blurred - mean) / np.sqrt(var + epsilon), patch)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --- Targets ----------------------------------------------------------------


def test_patchify_order():
    np.testing.assert_array_equal(to_numpy(patchify(IMAGES, PATCH)), numpy_patches(IMAGES, PATCH))


@pytest.mark.parametrize("target, reference", [
    (PixelTarget(), lambda x: numpy_pixels(x, PATCH)),
    (PixelTarget(normalize=False), lambda x: numpy_patches(x, PATCH)),
    (GradientHistogramTarget(num_bins=9), lambda x: numpy_gradient_histogram(x, PATCH, 9)),
    (GradientHistogramTarget(num_bins=4, epsilon=0.0), lambda x: numpy_gradient_histogram(x, PATCH, 4, 0.0)),
    (LowFrequencyTarget(), lambda x: numpy_low_frequency(x, PATCH, sigma=1.5)),  # half of max(2, 3)
    (LowFrequencyTarget(sigma=0.7), lambda x: numpy_low_frequency(x, PATCH, sigma=0.7)),
], ids=["pixels", "raw_pixels", "hog9", "hog4", "low_frequency", "low_frequency_sigma"])
def test_target_matches_numpy(target, reference):
    got = to_numpy(target(IMAGES, PATCH))
    assert got.shape == (2, 4, target.dim(PATCH, 2))
    np.testing.assert_allclose(got, reference(IMAGES), rtol=1e-4, atol=1e-5)


def test_gradient_histogram_of_simple_edges():
    """A vertical edge votes only for the horizontal-gradient bins; polarity does not matter."""
    image = np.zeros((1, 4, 4, 1), "float32")
    image[:, :, 2:] = 1.0  # gradient along x: orientation 0, between bins 3 and 0 of 4
    target = GradientHistogramTarget(num_bins=4, epsilon=0.0)
    histogram = to_numpy(target(image, 4))[0, 0]
    np.testing.assert_allclose(histogram, np.array([1.0, 0.0, 0.0, 1.0]) * np.sqrt(2.0), atol=1e-6)
    np.testing.assert_allclose(to_numpy(target(1.0 - image, 4)), to_numpy(target(image, 4)), atol=1e-6)
    # A flat image has no gradient: its target is 0, not NaN.
    np.testing.assert_array_equal(to_numpy(GradientHistogramTarget()(np.ones((1, 4, 4, 1)), 2)), 0.0)


def test_targets_are_on_one_scale():
    """On images with structure everywhere (waves), every target's mean square is about 1."""
    angles, phases = np.random.default_rng(0).uniform(0, np.pi, (2, 4))
    r, c = np.mgrid[0:16, 0:16]
    waves = [0.5 + 0.5 * np.sin(2 * np.pi * (r * np.cos(a) + c * np.sin(a)) / 8 + p) for a, p in zip(angles, phases)]
    images = np.stack(waves)[..., None].astype("float32")
    for target in (PixelTarget(), GradientHistogramTarget(), LowFrequencyTarget()):
        mean_square = float(np.mean(to_numpy(target(images, 4)) ** 2))
        assert 0.8 < mean_square <= 1.0, (target, mean_square)


def test_recovery_loss_is_per_patch_and_masked():
    loss = RecoveryLoss(PixelTarget(), PATCH)
    prediction = np.random.default_rng(1).normal(size=(2, 4, 12)).astype("float32")
    per_patch = ((prediction - numpy_pixels(IMAGES, PATCH)) ** 2).mean(-1)
    mask = np.array([[1, 0, 0, 1], [0, 1, 1, 1]], "float32")
    np.testing.assert_allclose(to_numpy(loss.call(IMAGES, prediction)), per_patch, rtol=1e-5)
    expected = (per_patch * mask).sum() / mask.sum()  # the mean over masked patches only
    assert float(loss(IMAGES, prediction, sample_weight=mask)) == pytest.approx(expected, rel=1e-5)
    restored = RecoveryLoss.from_config(loss.get_config())
    assert restored.target == loss.target and restored.patch_size == PATCH


# --- Masking ----------------------------------------------------------------


def test_random_patch_mask_has_the_configured_ratio():
    mask = random_patch_mask(100, 49, 0.6, seed=0)
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(mask.sum(axis=1), 29)  # round(0.6 * 49)
    assert len({tuple(row) for row in mask}) > 90  # masks differ between images
    np.testing.assert_array_equal(random_patch_mask(100, 49, 0.6, seed=0), mask)


def test_patch_masking_fills_masked_patches_only():
    layer = PatchMasking(PATCH)
    mask = np.array([[1, 0, 0, 1], [0, 0, 0, 1]], "float32")
    layer.build(IMAGES.shape)
    layer.fill.assign([0.25, -1.0])
    out = to_numpy(layer(IMAGES, mask))
    pixel_mask = np.repeat(np.repeat(mask.reshape(2, 2, 2), 2, axis=1), 3, axis=2)[..., None]
    expected = IMAGES * (1 - pixel_mask) + np.array([0.25, -1.0]) * pixel_mask
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_dataset_masks_ratio_and_structure():
    images = np.random.default_rng(2).random((20, 4, 6, 2)).astype("float32")
    model = _Grid(names=["pixels", "low_frequency"])
    data = masked_image_dataset(images, model, mask_ratio=0.5, batch_size=8, shuffle=False,
                                new_masks_each_epoch=False, seed=3)
    batches = list(data.as_numpy_iterator())
    assert [len(b[0]["images"]) for b in batches] == [8, 8, 4]
    x, y, sample_weight = batches[0]
    np.testing.assert_array_equal(x["images"], images[:8])
    assert sorted(y) == sorted(sample_weight) == ["low_frequency", "pixels"]
    for name in y:
        np.testing.assert_array_equal(y[name], images[:8])  # targets come from the clean images
        np.testing.assert_array_equal(sample_weight[name], x["mask"])
    masks = np.concatenate([b[0]["mask"] for b in batches])
    np.testing.assert_array_equal(masks.sum(axis=1), 2)  # round(0.5 * 4) of the 4 patches
    again = np.concatenate([b[0]["mask"] for b in data.as_numpy_iterator()])
    np.testing.assert_array_equal(again, masks)  # evaluation: the same masks every pass
    fresh = masked_image_dataset(images, model, 0.5, 8, shuffle=False, seed=3)
    first, second = ([b[0]["mask"] for b in fresh.as_numpy_iterator()] for _ in range(2))
    assert any((a != b).any() for a, b in zip(first, second))  # training: new masks each pass
    shifted = masked_image_dataset(images, model, 0.5, 8, shuffle=False, seed=3,
                                   augmentation=keras.layers.RandomTranslation(0.5, 0.5, seed=1))
    x, y, _ = next(shifted.as_numpy_iterator())
    assert not np.allclose(x["images"], images[:8])
    np.testing.assert_array_equal(y["pixels"], x["images"])  # augmented before the targets


class _Grid:
    """What `masked_image_dataset` reads from a model."""

    def __init__(self, names):
        self.target_names, self.num_patches, self.image_shape = names, 4, (4, 6, 2)


# --- The model, trained per target ------------------------------------------


def tiny_vit(name="vit"):
    return keras_hub.models.ViTBackbone(
        image_shape=(8, 8, 1), patch_size=2, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, name=name)


def digit_like_images(n, seed):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 8, 8, 1), "float32")
    for i in range(n):
        top, left = rng.integers(0, 4, 2)
        images[i, top : top + 4, left + 1 : left + 3] = rng.uniform(0.5, 1.0)
    return images + 0.05 * rng.random(images.shape).astype("float32")


@pytest.fixture(scope="module")
def trained():
    """A MinimaxModel on a tiny ViT MIM model, fit once with a robust rule."""
    keras.utils.set_random_seed(0)
    mim = MaskedImageModel(tiny_vit(), decoder_dim=16)
    model = MinimaxModel(mim, task_names=mim.target_names, task_key=None)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=mim.recovery_losses())
    images = digit_like_images(96, 0)
    data = masked_image_dataset(images, mim, mask_ratio=0.5, batch_size=32, drop_remainder=True,
                                augmentation=keras.layers.RandomTranslation(0.1, 0.1, seed=0))
    history = model.fit(data, epochs=2, verbose=0, shuffle=False,
                        callbacks=[MirrorDescent("exponentiated_gradient")])
    return model, history


def evaluation_batch(n=32):
    images = digit_like_images(n, 1)
    mask = random_patch_mask(n, 16, 0.5, seed=4)
    names = ["pixels", "gradient_histogram", "low_frequency"]
    return {"images": images, "mask": mask}, {k: images for k in names}, {k: mask for k in names}


def test_history_has_per_target_losses_and_weights(trained):
    model, history = trained
    names = ["pixels", "gradient_histogram", "low_frequency"]
    assert model.task_names == names
    for name in names:
        assert len(history.history[f"loss/{name}"]) == 2
        assert np.isfinite(history.history[f"loss/{name}"]).all()
        assert 0 < history.history[f"weight/{name}"][-1] < 1
    final = [history.history[f"weight/{n}"][-1] for n in names]
    assert sum(final) == pytest.approx(1.0, abs=1e-5)
    assert max(final) - min(final) > 1e-4  # the rule moved the weights
    assert history.history["loss/worst"][-1] == pytest.approx(
        max(history.history[f"loss/{n}"][-1] for n in names), rel=1e-6)


def test_loss_counts_only_masked_patches(trained):
    """Each task's loss is the mean squared error over masked patches, against NumPy targets."""
    model, _ = trained
    x, y, sample_weight = evaluation_batch()
    logs = model.evaluate(x, y, sample_weight=sample_weight, batch_size=32, verbose=0, return_dict=True)
    predictions = {k: to_numpy(v) for k, v in model.predict_on_batch(x).items()}
    references = {
        "pixels": numpy_pixels(x["images"], (2, 2)),
        "gradient_histogram": numpy_gradient_histogram(x["images"], (2, 2), 9),
        "low_frequency": numpy_low_frequency(x["images"], (2, 2), sigma=1.0),
    }
    mask = x["mask"].astype(bool)
    for name, target in references.items():
        per_patch = ((predictions[name] - target) ** 2).mean(-1)
        assert logs[f"loss/{name}"] == pytest.approx(per_patch[mask].mean(), rel=1e-3)
        assert abs(per_patch[mask].mean() - per_patch[~mask].mean()) > 1e-4  # the mask matters


def test_masked_pixels_do_not_reach_the_model(trained):
    model, _ = trained
    x, _, _ = evaluation_batch()
    pixel_mask = np.repeat(np.repeat(x["mask"].reshape(-1, 4, 4), 2, 1), 2, 2)[..., None]
    changed = {"images": np.where(pixel_mask > 0, 1.0 - x["images"], x["images"]), "mask": x["mask"]}
    before, after = model.predict_on_batch(x), model.predict_on_batch(changed)
    for name in before:
        np.testing.assert_allclose(to_numpy(after[name]), to_numpy(before[name]), rtol=1e-5, atol=1e-5)
    unmasked = {"images": x["images"], "mask": np.zeros_like(x["mask"])}
    assert not np.allclose(to_numpy(model.predict_on_batch(unmasked)["pixels"]), to_numpy(before["pixels"]))


def test_save_and_load(trained, tmp_path):
    model, _ = trained
    path = str(tmp_path / "mim.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.model, MaskedImageModel)
    assert restored.model.targets == model.model.targets and restored.model.patch_size == (2, 2)
    np.testing.assert_allclose(restored.task_weights.numpy(), model.task_weights.numpy())
    x, y, sample_weight = evaluation_batch()
    for name, value in model.predict_on_batch(x).items():
        np.testing.assert_allclose(to_numpy(restored.predict_on_batch(x)[name]), to_numpy(value), rtol=1e-5, atol=1e-6)
    assert isinstance(restored.loss["gradient_histogram"], RecoveryLoss)


def test_any_backbone_with_a_feature_map():
    """A convolutional backbone with one feature-map position per patch works too."""
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 2, strides=2)], name="convnet")
    mim = MaskedImageModel(backbone, targets=["pixels", GradientHistogramTarget(num_bins=6)], patch_size=2, decoder_dim=8)
    # A symbolic call: the shapes without running (or compiling) anything.
    outputs = mim({"images": keras.KerasTensor((4, 8, 8, 1)), "mask": keras.KerasTensor((4, 16))})
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"pixels": (4, 16, 4), "gradient_histogram": (4, 16, 6)}


def test_keras_hub_backbone_with_extra_tokens():
    """DINOv2 takes a dict of images and puts a class token and registers before the patches."""
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=2, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16, num_register_tokens=2,
        image_shape=(8, 8, 1), position_embedding_shape=(8, 8, 1))
    assert backbone.output_shape[1] == 16 + 3
    mim = MaskedImageModel(backbone, targets=["pixels"], decoder_dim=8)
    outputs = mim({"images": keras.KerasTensor((4, 8, 8, 1)), "mask": keras.KerasTensor((4, 16))})
    assert tuple(outputs["pixels"].shape) == (4, 16, 4)


# --- Bad input ---------------------------------------------------------------


def test_bad_input_is_named():
    vit = tiny_vit("vit_for_errors")
    with pytest.raises(ValueError, match="not tiled by patches of 3 x 3"):
        MaskedImageModel(vit, patch_size=3)
    with pytest.raises(ValueError, match="Unknown recovery target 'edges'.*gradient_histogram"):
        MaskedImageModel(vit, targets=["pixels", "edges"])
    with pytest.raises(ValueError, match="distinct names"):
        MaskedImageModel(vit, targets=["pixels", PixelTarget(normalize=False)])
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 2, strides=2)])
    assert MaskedImageModel(conv, targets=["pixels"]).patch_size == (2, 2)  # read from the 4 x 4 feature map
    with pytest.raises(ValueError, match="Check `patch_size`"):
        MaskedImageModel(conv, patch_size=4)  # a 4 x 4 feature map is not a 2 x 2 grid
    odd = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, strides=2)])  # a 3 x 3 map
    with pytest.raises(ValueError, match="not a feature map that tiles the image: pass `patch_size=`"):
        MaskedImageModel(odd)
    sequence = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Reshape((16, 4)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="pass `patch_size=`"):
        MaskedImageModel(sequence)
    with pytest.raises(ValueError, match="add the channel axis|Add the channel axis"):
        PixelTarget()(np.zeros((2, 8, 8)), 2)
    with pytest.raises(ValueError, match=r"mask_ratio.*\(0, 1\)"):
        random_patch_mask(4, 16, 1.0)
    with pytest.raises(ValueError, match="same target and patch size"):
        RecoveryLoss("pixels", 2)(np.zeros((1, 8, 8, 1)), np.zeros((1, 16, 9)))
    with pytest.raises(ValueError, match=r"images have shape \(3, 8, 8\)"):
        masked_image_dataset(np.zeros((3, 8, 8)), _Grid(["pixels"]))
    with pytest.raises(ValueError, match="mask has 5 entries"):
        PatchMasking(2)(np.zeros((1, 8, 8, 1), "float32"), np.zeros((1, 5), "float32"))


# --- The recipe --------------------------------------------------------------


def test_recipe_quick_run(tmp_path):
    """`python -m keras_taskrobust run mim --quick` writes the report and the figure."""
    output = tmp_path / "out"
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
           # The run's models are tiny: XLA's slow optimisations would cost
           # a third of the test's time on JAX (compilation) and save nothing.
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_taskrobust", "run", "mim", "--quick", "--verbose", "0",
         "--output", str(output), "--data-dir", str(tmp_path / "tfds")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text())
    assert report["recipe"] == "mim" and report["backend"] == keras.backend.backend()
    assert (output / "mim.png").stat().st_size > 10_000
    targets = ["pixels", "gradient_histogram", "low_frequency"]
    for rule in ("uniform", "learning_progress"):  # the recipe's robust rule, on held-out losses
        result_of_rule = report["rules"][rule]
        assert sorted(result_of_rule["recovery_loss"]) == sorted(targets)
        assert all(np.isfinite(v) for v in result_of_rule["recovery_loss"].values())
        assert sorted(result_of_rule["downstream"]) == ["digit_clean", "digit_rotated", "thickness"]
        assert result_of_rule["worst"] == min(result_of_rule["downstream"].values())
    assert report["rules"]["uniform"]["task_weights"] == pytest.approx({t: 1 / 3 for t in targets})
    assert "Held-out recovery loss per target" in result.stdout
