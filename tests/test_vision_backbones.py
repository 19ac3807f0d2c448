"""KerasCV and keras-hub convolutional backbones, and KerasCV augmentation, wherever the library takes them.

Which KerasCV backbones work is the table `KERAS_CV_BACKBONES`: one test
builds every one of them from a tiny config (nothing downloads) and the
README's table is rendered from the same table, so that the two agree.
"""

import pathlib

import numpy as np
import pytest

import keras
from conftest import BACKEND
from keras_taskrobust import MinimaxModel
from keras_taskrobust.callbacks import DownstreamSuite
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.data import mix_tasks
from keras_taskrobust.downstream import DownstreamTask
from keras_taskrobust.downstream import evaluate_transfer
from keras_taskrobust.vision import MaskedImageModel
from keras_taskrobust.vision import masked_image_dataset

keras_hub = pytest.importorskip("keras_hub")
keras_cv = pytest.importorskip("keras_cv")

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
IMAGE = (32, 32, 3)


def works(output, config, shape, note="", copies=True):
    """A backbone that builds, runs, copies through its config and trains; `shape`: its output on one image.

    `copies=False`: the copy made from its config differs (the note says how).
    """
    return {"status": "works", "output": output, "config": config, "shape": shape, "note": note, "copies": copies}


def fails(reason, error, config):
    """A backbone whose construction raises `error` (a regex); `reason` for the README."""
    return {"status": "fails", "reason": reason, "error": error, "config": config}


_EFFICIENTNET = dict(
    include_rescaling=False, width_coefficient=0.1, depth_coefficient=0.1, stackwise_kernel_sizes=[3, 3],
    stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
    stackwise_expansion_ratios=[1, 2], stackwise_strides=[2, 2], input_shape=IMAGE)
_RESNET = dict(stackwise_filters=[4, 8], stackwise_blocks=[1, 1], stackwise_strides=[1, 2], include_rescaling=False,
               input_shape=IMAGE)
_MAP = "feature map"

# Every backbone class of `keras_cv.models` (the preset aliases, such as
# `ResNet50Backbone`, are these classes with a preset's config), with a tiny
# config and its output's shape on one 32 x 32 image.
KERAS_CV_BACKBONES = {
    "CSPDarkNetBackbone": works(_MAP, dict(
        stackwise_channels=[4, 8], stackwise_depth=[1, 1], include_rescaling=False, input_shape=IMAGE), (4, 4, 8)),
    "DenseNetBackbone": works(_MAP, dict(
        stackwise_num_repeats=[1, 1], growth_rate=4, include_rescaling=False, input_shape=IMAGE), (4, 4, 38)),
    "EfficientNetLiteBackbone": works(_MAP, _EFFICIENTNET, (4, 4, 1280)),
    "EfficientNetV1Backbone": works(_MAP, dict(_EFFICIENTNET, stackwise_squeeze_and_excite_ratios=[0.25, 0.25]),
                                    (4, 4, 128)),
    "EfficientNetV2Backbone": works(_MAP, dict(
        _EFFICIENTNET, stackwise_squeeze_and_excite_ratios=[0.0, 0.25], stackwise_conv_types=["fused", "unfused"]),
        (8, 8, 128)),
    "MiTBackbone": works(_MAP, dict(
        include_rescaling=False, depths=[1, 1, 1, 1], embedding_dims=[4, 8, 10, 16], input_shape=IMAGE), (1, 1, 16),
        "its stages have 1, 2, 5 and 8 attention heads: `embedding_dims` must be multiples of them"),
    "MobileNetV3Backbone": works(_MAP, dict(
        stackwise_expansion=[1, 2], stackwise_filters=[4, 8], stackwise_kernel_size=[3, 3], stackwise_stride=[2, 2],
        stackwise_se_ratio=[None, 0.25], stackwise_activation=["relu", "hard_swish"], include_rescaling=False,
        input_shape=IMAGE), (4, 4, 48)),
    "ResNetBackbone": works(_MAP, _RESNET, (4, 4, 32),
                            "also trained with `mix_tasks` and `DownstreamSuite` on every backend"),
    "ResNetV2Backbone": fails(
        "Keras 3 refuses the model: two layers named `v2_stack_0_block1_use_preactivation_bn` "
        "(operation names must be unique); keras-hub's `ResNetBackbone(use_pre_activation=True)` "
        "is its successor", r"v2_stack_0_block1_use_preactivation_bn.*used 2 times", _RESNET),
    "VGG16Backbone": works(_MAP, dict(include_rescaling=False, include_top=False, input_shape=IMAGE), (1, 1, 512),
                           "a fixed architecture of 14.7 M weights"),
    "ViTDetBackbone": works(_MAP, dict(
        include_rescaling=False, input_shape=IMAGE, patch_size=4, embed_dim=8, depth=1, mlp_dim=16, num_heads=2,
        out_chans=8, window_size=2, global_attention_indices=[0]), (8, 8, 8)),
    "VideoSwinBackbone": works("video feature map", dict(
        input_shape=(2, *IMAGE), embed_dim=8, patch_size=[2, 4, 4], window_size=[1, 2, 2], depths=[1],
        num_heads=[1], drop_path_rate=0.0), (1, 8, 8, 8),
        "video input `[frames, H, W, C]`: not for `MaskedImageModel`"),
    "YOLOV8Backbone": works(_MAP, dict(
        stackwise_channels=[4, 8, 8, 16], stackwise_depth=[1, 1, 1, 1], include_rescaling=False, input_shape=IMAGE),
        (1, 1, 16)),
    "CenterPillarBackbone": works("feature map", dict(
        stackwise_down_blocks=[1, 1], stackwise_down_filters=[4, 8], stackwise_up_filters=[8, 4],
        input_shape=(32, 32, 4)), (32, 32, 4),
        "3D detection: its input is a grid of point-cloud pillar features, not an image; its config "
        "leaves out `input_shape`, so a copy from it (fine-tuning) takes the default 128 channels", copies=False),
}


def backbone_table():
    """The README's table of KerasCV backbones, in Markdown."""
    lines = ["| KerasCV backbone | Status | Output on a 32 x 32 image (test config) | Note |", "|---|---|---|---|"]
    for name, entry in KERAS_CV_BACKBONES.items():
        if entry["status"] == "works":
            shape = " x ".join(str(n) for n in entry["shape"])
            lines.append(f"| `{name}` | works | {shape} {entry['output']} | {entry['note']} |")
        else:
            lines.append(f"| `{name}` | fails | - | {entry['reason']} |")
    return "\n".join(lines)


def test_readme_table_is_the_tested_one():
    table = backbone_table()
    assert table in README.read_text(encoding="utf-8"), (
        "The README's table of KerasCV backbones differs from KERAS_CV_BACKBONES in "
        f"{pathlib.Path(__file__).name}; put this one in the README:\n\n{table}\n")


def test_every_kerascv_backbone_class_is_listed():
    classes = {
        name for name in dir(keras_cv.models)
        if name.endswith("Backbone") and name != "Backbone"
        # A preset alias subclasses the class it configures.
        and not any(base.__name__ in KERAS_CV_BACKBONES for base in getattr(keras_cv.models, name).__mro__[1:])
    }
    assert classes == set(KERAS_CV_BACKBONES)


# Building 14 backbones costs about 20 s on torch and several minutes of
# JAX's op-by-op compilation (each weight initialiser, each new shape); the
# backbones are Keras functional models, so what builds is the same on every
# backend. The places a backbone is used are tested on every backend below.
@pytest.mark.skipif(BACKEND != "torch", reason="every KerasCV backbone is built on the torch backend only (cost)")
@pytest.mark.parametrize("name", list(KERAS_CV_BACKBONES))
def test_kerascv_backbone_from_config(name):
    """Builds from config, runs, copies through its config, goes into MaskedImageModel (an image
    backbone) and trains one step in MinimaxModel; or fails as listed."""
    entry = KERAS_CV_BACKBONES[name]
    cls = getattr(keras_cv.models, name)
    if entry["status"] == "fails":
        with pytest.raises(ValueError, match=entry["error"]):
            cls(**entry["config"])
        return
    backbone = cls(**entry["config"])
    images = np.random.default_rng(0).random((4, *backbone.input_shape[1:])).astype("float32")
    features = keras.ops.convert_to_numpy(backbone(images))
    assert features.shape == (4, *entry["shape"])
    # DownstreamTask's fine-tuning copies a backbone through its config.
    copy = cls.from_config(backbone.get_config())
    same_shapes = [tuple(w.shape) for w in copy.weights] == [tuple(w.shape) for w in backbone.weights]
    assert same_shapes == entry["copies"]
    if same_shapes:
        copy.set_weights(backbone.get_weights())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(images)), features, rtol=1e-4, atol=1e-5)

    if entry["output"] == _MAP and backbone.input_shape[1:] == IMAGE:
        # MaskedImageModel's feature-map path, the patch size read from the grid (symbolic).
        mim = MaskedImageModel(backbone, targets=["pixels"], decoder_dim=4)
        assert mim.patch_size == (IMAGE[0] // entry["shape"][0], IMAGE[1] // entry["shape"][1])
        outputs = mim({"images": keras.KerasTensor((2, *IMAGE)), "mask": keras.KerasTensor((2, mim.num_patches))})
        assert tuple(outputs["pixels"].shape) == (2, entry["shape"][0] * entry["shape"][1], 3 * np.prod(mim.patch_size))

    net = keras.Sequential([keras.Input(backbone.input_shape[1:]), backbone, keras.layers.Flatten(),
                            keras.layers.Dense(2)])
    model = MinimaxModel(net, num_tasks=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [np.array(w) for w in backbone.trainable_weights]
    history = model.fit({"images": images, "task_id": np.array([0, 1, 0, 1])}, np.array([0, 1, 1, 0]),
                        batch_size=4, epochs=1, verbose=0, callbacks=[MirrorDescent("exponentiated_gradient")])
    assert np.isfinite(history.history["loss/worst"]).all()
    assert any(not np.array_equal(a, np.array(w)) for a, w in zip(before, backbone.trainable_weights))


# --- The places a backbone is used, on every backend --------------------------


def keras_hub_resnet(name="resnet"):
    # keras-hub's ResNet wants 64 filters in the first stack (and from the
    # stem, for its basic blocks); one stack keeps it small.
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64], stackwise_num_blocks=[1],
        stackwise_num_strides=[1], block_type="basic_block", image_shape=IMAGE, name=name)


def keras_hub_efficientnet(name="efficientnet", **kwargs):
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25], stackwise_strides=[2, 2],
        stackwise_block_types=["fused", "unfused"], stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False], input_shape=IMAGE, name=name, **kwargs)


def images_and_side(n, seed):
    """Images with a bright square on the left or the right half; the label is the side."""
    rng = np.random.default_rng(seed)
    images = 0.2 * rng.random((n, *IMAGE)).astype("float32")
    side = np.arange(n) % 2
    for i in range(n):
        top, left = rng.integers(0, 16), rng.integers(0, 8) + 16 * side[i]
        images[i, top : top + 8, left : left + 8] += 0.8
    return images, side.astype("int32")


def side_task(name="side"):
    return DownstreamTask(name, images_and_side(32, 1), images_and_side(16, 2), num_classes=2, epochs=2)


def test_kerascv_backbone_with_mixed_tasks_and_downstream_suite():
    """KerasCV's ResNet in a classifier fed by `mix_tasks` with KerasCV augmentation.

    `DownstreamSuite` finds the backbone by its layer name. (ResNet: on JAX
    the tiny EfficientNetV2 costs twice as much to compile.)
    """
    backbone = keras_cv.models.ResNetBackbone(**KERAS_CV_BACKBONES["ResNetBackbone"]["config"], name="cv_resnet")
    net = keras.Sequential([keras.Input(IMAGE), backbone, keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(2)])
    model = MinimaxModel(net, task_names=["left_half", "right_half"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, side = images_and_side(32, 0)
    tasks = {"left_half": (images[side == 0], side[side == 0]), "right_half": (images[side == 1], side[side == 1])}
    flip = keras_cv.layers.RandomFlip("vertical", seed=1)
    stream = mix_tasks(tasks, batch_size=8, stratified=True, steps_per_epoch=2, seed=0, augmentation=flip)
    before = [np.array(w) for w in backbone.trainable_weights]
    suite = DownstreamSuite("cv_resnet", [side_task()], verbose=0)
    history = model.fit(stream, epochs=1, verbose=0, callbacks=[MirrorDescent("exponentiated_gradient"), suite])
    assert np.isfinite(history.history["loss/worst"]).all()
    assert any(not np.array_equal(a, np.array(w)) for a, w in zip(before, backbone.trainable_weights))
    assert 0.0 <= history.history["downstream/side"][-1] <= 1.0
    assert suite.results[-1]["worst_task"] == "side"


def test_masked_image_model_on_feature_maps_with_kerascv_augmentation():
    """keras-hub's ResNet through MaskedImageModel's feature-map path, trained on KerasCV-augmented batches.

    The patch size comes from the feature map (32 x 32 images, an 8 x 8
    map). Every KerasCV image backbone is built into a MaskedImageModel in
    `test_kerascv_backbone_from_config`.
    """
    backbone = keras_hub_resnet()
    mim = MaskedImageModel(backbone, targets=["pixels", "low_frequency"], decoder_dim=8)
    assert mim.patch_size == (4, 4) and mim.num_patches == 64
    model = MinimaxModel(mim, task_names=mim.target_names, task_key=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=mim.recovery_losses())
    images, _ = images_and_side(16, 0)
    flip = keras_cv.layers.RandomFlip("horizontal", seed=3)
    data = masked_image_dataset(images, mim, batch_size=8, drop_remainder=True, shuffle=False, augmentation=flip)
    x, y, _ = next(data.as_numpy_iterator())
    flipped = [not np.allclose(a, b) for a, b in zip(x["images"], images[:8])]
    assert any(flipped)
    for got, image, was_flipped in zip(x["images"], images[:8], flipped):
        np.testing.assert_allclose(got, image[:, ::-1] if was_flipped else image)
    np.testing.assert_array_equal(y["pixels"], x["images"])  # the targets see the augmented images

    before = [np.array(w) for w in backbone.trainable_weights]
    history = model.fit(data, epochs=1, verbose=0, callbacks=[MirrorDescent("exponentiated_gradient")])
    for name in mim.target_names:
        assert np.isfinite(history.history[f"loss/{name}"]).all()
    assert history.history["weight/pixels"][-1] != pytest.approx(0.5, abs=1e-6)  # the rule moved the weights
    assert any(not np.array_equal(a, np.array(w)) for a, w in zip(before, backbone.trainable_weights))


def test_mix_tasks_augments_the_images_only():
    """KerasCV's RandomFlip on every batch's images; task ids and labels untouched; a seed repeats."""
    rng = np.random.default_rng(0)
    images = rng.random((12, 4, 4, 1)).astype("float32")
    ids = np.arange(12)  # the label is the image's index: each image can be traced back
    tasks = {"a": (images[:6], ids[:6]), "b": (images[6:], ids[6:])}

    def stream():
        flip = keras_cv.layers.RandomFlip("horizontal", seed=5)
        return mix_tasks(tasks, batch_size=4, stratified=True, steps_per_epoch=3, seed=0, augmentation=flip)

    batches = list(stream().as_numpy_iterator())
    flipped = 0
    for x, y in batches:
        np.testing.assert_array_equal(x["task_id"], (y >= 6).astype("int32"))
        for image, index in zip(x["features"], y):
            if np.array_equal(image, images[index]):
                continue
            np.testing.assert_array_equal(image, images[index][:, ::-1])
            flipped += 1
    assert 0 < flipped < 12
    for (x, _), (again, _) in zip(batches, stream().as_numpy_iterator()):
        np.testing.assert_array_equal(again["features"], x["features"])
    with pytest.raises(ValueError, match=r"x\['features'\].*'pixels', 'task_id'.*features_key="):
        mix_tasks({"a": ({"pixels": images}, ids)}, batch_size=4, augmentation=keras_cv.layers.RandomFlip())
    with pytest.raises(TypeError, match="must be a Keras layer"):
        mix_tasks(tasks, batch_size=4, augmentation="flip")


@pytest.mark.skipif(BACKEND != "torch", reason="on the torch backend only: building it costs 10 s of compilation on JAX")
def test_keras_hub_efficientnet_in_masked_image_model_and_its_config():
    """keras-hub's EfficientNet on MaskedImageModel's feature-map path (symbolic: nothing runs).

    keras-hub 0.32's `EfficientNetBackbone.get_config` leaves out
    `num_features`: fine-tuning, which copies the backbone through its
    config, names the problem instead of failing on a weight shape.
    """
    backbone = keras_hub_efficientnet(num_features=16)
    mim = MaskedImageModel(backbone, targets=["pixels"], decoder_dim=8)
    assert mim.patch_size == (8, 8)
    outputs = mim({"images": keras.KerasTensor((2, *IMAGE)), "mask": keras.KerasTensor((2, 16))})
    assert tuple(outputs["pixels"].shape) == (2, 16, 8 * 8 * 3)
    finetune = DownstreamTask("side", images_and_side(8, 1), images_and_side(8, 2), num_classes=2, mode="finetune")
    with pytest.raises(ValueError, match=r"get_config\(\)` leaves out.*num_features.*linear_probe"):
        evaluate_transfer(backbone, [finetune])
