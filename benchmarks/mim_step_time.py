"""Step time of three-target robust MIM against a plain single-target MAE fit.

The model of the `mim` recipe (keras-hub `ViTBackbone` from config: 28 x 28
x 1 images, patch 7, 2 layers, hidden 64, 4 heads, MLP 128; decoder 64),
batch 128, 50 % of the patches masked, the recipe's input pipeline
(`masked_image_dataset` with `RandomTranslation`), AdamW. Three fits:

- `plain, pixels only`: `MaskedImageModel(vit, targets=["pixels"])` with
  plain `keras.Model.fit` -- a SimMIM/MAE-style fit on one target (the
  baseline);
- `plain, 3 targets`: the three-target model with plain `fit` (Keras sums
  the three losses): the cost of the extra targets and heads alone;
- `MinimaxModel, 3 targets`: the recipe's fit, `MinimaxModel(...,
  task_key=None)` with `MirrorDescent(ExponentiatedGradient())`.

Each fit is timed twice: fed by that pipeline (`tf.data`, what the recipe
runs) and fed in-memory NumPy arrays with fixed masks (`arrays`: the
model's step alone, without the pipeline's augmentation and masking on the
same two cores). Each backend uses its default jit settings. The fits alternate for
`--rounds` rounds (`harness.py`); each runs `1 + --epochs` epochs of
`--steps` steps, the first (compilation) dropped. Reported: the median
ms/step of each and its median per-round ratio to the baseline, with the
range of the per-round ratios, and to `plain, 3 targets` (the same model
under plain `fit`: what `MinimaxModel` adds).

Usage:

    OMP_NUM_THREADS=1 python benchmarks/mim_step_time.py --all
"""

import statistics
import time

import numpy as np

import harness

BATCH = 128
OPTIONS = {
    "rounds": (3, "alternations of the three fits", 0), "epochs": (3, "timed epochs per fit"),
    "steps": (20, "steps per epoch", 2),
}
VARIANTS = ("plain, pixels only", "plain, 3 targets", "MinimaxModel, 3 targets")


def build(variant):
    """`(model, MaskedImageModel, callbacks)` of a variant, same seed."""
    import keras
    import keras_hub

    from keras_taskrobust import MinimaxModel
    from keras_taskrobust.callbacks import MirrorDescent
    from keras_taskrobust.rules import ExponentiatedGradient
    from keras_taskrobust.vision import MaskedImageModel

    keras.utils.set_random_seed(0)
    vit = keras_hub.models.ViTBackbone(image_shape=(28, 28, 1), patch_size=7, num_layers=2, num_heads=4,
                                       hidden_dim=64, mlp_dim=128)
    targets = ["pixels"] if variant == "plain, pixels only" else ["pixels", "gradient_histogram", "low_frequency"]
    mim = MaskedImageModel(vit, targets=targets, decoder_dim=64)
    model, callbacks = mim, []
    if variant.startswith("MinimaxModel"):
        model = MinimaxModel(mim, task_names=mim.target_names, task_key=None)
        callbacks = [MirrorDescent(ExponentiatedGradient())]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05), loss=mim.recovery_losses())
    return model, mim, callbacks


def step_times(model, data, epochs, steps, callbacks):
    """Fits `1 + epochs` epochs; each epoch's seconds per step but the first's."""
    import keras

    starts, times = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - starts[-1]),
    )
    arguments = data if isinstance(data, dict) else {"x": data}
    model.fit(**arguments, epochs=1 + epochs, verbose=0, shuffle=False, callbacks=[*callbacks, timer])
    return [t / steps for t in times[1:]]


def inputs(images, mim, kind):
    """The recipe's `tf.data` pipeline, or NumPy arrays with fixed masks."""
    import keras

    from keras_taskrobust.vision import masked_image_dataset
    from keras_taskrobust.vision import random_patch_mask

    if kind == "tf.data":
        return masked_image_dataset(
            images, mim, 0.5, BATCH, drop_remainder=True, seed=0,
            augmentation=keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=0),
        )
    mask = random_patch_mask(len(images), mim.num_patches, 0.5, seed=0)
    names = mim.target_names
    return {"x": {"images": images, "mask": mask}, "y": {n: images for n in names},
            "sample_weight": {n: mask for n in names}, "batch_size": BATCH}


def measure_backend(rounds, epochs, steps):
    import keras

    images = np.random.default_rng(0).random((BATCH * steps, 28, 28, 1)).astype("float32")
    for kind in ("tf.data",) if harness.SMOKE else ("tf.data", "arrays"):
        fits = {}
        for variant in VARIANTS:
            model, mim, callbacks = build(variant)
            fits[variant] = (model, inputs(images, mim, kind), callbacks)
        times, medians = harness.alternate(
            {variant: (lambda fit=fit: step_times(fit[0], fit[1], epochs, steps, fit[2])) for variant, fit in fits.items()},
            rounds)
        for variant in VARIANTS:
            yield {
                "backend": keras.backend.backend(), "input": kind, "variant": variant,
                "ms": 1e3 * statistics.median(times[variant]),
                "ratio": harness.ratio(medians, variant, VARIANTS[0]),
                "vs_plain_3": harness.ratio(medians, variant, VARIANTS[1]),
                "round_ratios": [a / b for a, b in zip(medians[variant], medians[VARIANTS[0]])],
            }


def markdown_table(rows):
    lines = [
        "| backend | input | fit | ms/step | ratio to plain pixels-only | per-round ratios (min-max) "
        "| ratio to plain 3 targets |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['input']} | {r['variant']} | {r['ms']:.1f} | {r['ratio']:.2f} "
            f"| {min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f} | {r['vs_plain_3']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(__file__, __doc__.splitlines()[0], OPTIONS, measure_backend, markdown_table)
