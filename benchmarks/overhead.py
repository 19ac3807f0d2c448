"""Step-time overhead of `MinimaxModel` over plain `keras.Model.fit`.

Compares the median training step time of
`MinimaxModel(net, num_tasks=K)` fit with
`MirrorDescent(ExponentiatedGradient())` against plain `keras.Model.fit` of
the net on the same architecture, initial weights, optimizer (Adam) and
data, for K = 8 and K = 256, on two workloads:

- `mlp`: 64 inputs, Dense(256) x 2, 10-class softmax, batch 256, sparse
  categorical crossentropy, one task id per example;
- `bert`: a tiny keras-hub `BertMaskedLM` built from config (2 layers,
  hidden 64, sequence 64, 10 masked positions), batch 32, sample weights =
  mask weights, one task id per masked position (shape [batch, 10]). Its
  baseline is `keras.Model.fit(net, ...)`, not `net.fit`: keras-hub's task
  models override `fit` with a tf.data or grain pipeline that preprocesses
  every batch (even with `preprocessor=None`), which on JAX made the plain
  step slower than the wrapped one in runs 1-8.

Each backend uses its default jit settings (XLA on JAX, `tf.function` on
TensorFlow, eager torch). After a warm-up fit of each model (compilation),
the three fits alternate for `--rounds` rounds, each round starting with the
next model, so that the noise of a shared machine hits them alike; a
`MinimaxModel` fit with the same `MirrorDescent` settings as the last one
reuses its compiled step, so a round takes a fraction of a second. Each fit
runs `1 + --epochs` epochs; the first (the fit's own set-up) is dropped and
every other epoch gives one sample, its wall time / steps, timed from
`on_epoch_begin` to `on_epoch_end`. Epochs rather than batches: Keras
dispatches the plain model's batch-end callbacks asynchronously on JAX and
torch, so per-batch timings would miss compute still in flight; by
`on_epoch_end` it has all been waited for. Reported: the median step time of
each, and the ratio as the median over rounds of the round's minimax/plain
ratio (each pair measured within a second of each other), with the range of
the per-round ratios.

A third model in each round gives the floor: `Forwarding`, a `keras.Model`
that takes the same dict input, drops the task ids and calls the net, with
Keras' own loss and no task logic. Its ratio to the plain model is what any
wrapper model with a task-id input costs in Keras' trainer; the minimax ratio
above it is what the grouping, the weight rule and the task logs cost.
`loss_cost.py` measures that part alone, outside `fit` and its noise. (On
torch and TensorFlow the minimax training step skips the wrapper's own
`Layer.__call__` since commit cc3ea81, which `Forwarding` pays, so there the
floor overstates what the minimax model pays for being a wrapper.)
`overhead_by_width.py` repeats the MLP comparison with wider hidden layers;
`step_overhead.py` times the MLP's training step itself, without `fit`.

Usage:

    python benchmarks/overhead.py --all            # 3 backends, markdown table
    python benchmarks/overhead.py --backend torch  # one backend, JSON lines
"""

import functools
import statistics
import time

import numpy as np

import per_backend

TARGETS = {"jax": 1.05, "tensorflow": 1.05, "torch": 1.10}
TASK_COUNTS = (8, 256)


def mlp_workload(num_tasks, rng, width=256):
    """Returns `(make_net, loss, batch_size, plain_data, minimax_data)`.

    `width`: the units of the two hidden layers (`overhead_by_width.py`
    varies it).
    """
    import keras

    def make_net():
        return keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])

    n = 256 * 32
    features = rng.normal(size=(n, 64)).astype("float32")
    labels = rng.integers(0, 10, n).astype("int32")
    task_ids = rng.integers(0, num_tasks, n).astype("int32")
    plain = {"x": features, "y": labels}
    minimax = {"x": {"features": features, "task_id": task_ids}, "y": labels}
    return make_net, "sparse_categorical_crossentropy", 256, plain, minimax


def bert_workload(num_tasks, rng):
    """A tiny BERT masked LM; padding_mask is int32 (the backbone's Input dtype)."""
    import keras
    import keras_hub

    def make_net():
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
            intermediate_dim=128, max_sequence_length=64,
        )
        return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)

    n, seq, masks = 32 * 12, 64, 10
    lengths = rng.integers(masks, seq + 1, n)
    padding_mask = (np.arange(seq) < lengths[:, None]).astype("int32")
    x = {
        "token_ids": rng.integers(0, 1000, (n, seq)).astype("int32") * padding_mask,
        "padding_mask": padding_mask,
        "segment_ids": np.zeros((n, seq), "int32"),
        "mask_positions": rng.integers(0, lengths[:, None], (n, masks)).astype("int32"),
    }
    labels = rng.integers(0, 1000, (n, masks)).astype("int32")
    # Like keras-hub's preprocessor: 1 for a real masked position, 0 for padding.
    weights = (np.arange(masks) < rng.integers(masks // 2, masks + 1, n)[:, None]).astype("float32")
    task_ids = rng.integers(0, num_tasks, (n, masks)).astype("int32")
    plain = {"x": x, "y": labels, "sample_weight": weights}
    minimax = {"x": {**x, "task_id": task_ids}, "y": labels, "sample_weight": weights}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return make_net, loss, 32, plain, minimax


def cnn_workload(num_tasks, rng):
    """The main job's CNN (recipe `views`): 28 x 28 images, a 16-unit backbone, 20 logits, batch 64."""
    import keras

    from keras_taskrobust.recipes.digit_views import build_network

    n = 64 * 32
    images = rng.uniform(size=(n, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 20, n).astype("int32")
    task_ids = rng.integers(0, num_tasks, n).astype("int32")
    plain = {"x": images, "y": labels}
    minimax = {"x": {"image": images, "task_id": task_ids}, "y": labels}
    return build_network, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 64, plain, minimax


WORKLOADS = {"mlp": mlp_workload, "bert": bert_workload, "cnn": cnn_workload}


def forwarding_model(net):
    """A wrapper that only forwards `x` without its task ids to `net`: the floor."""
    import keras

    class Forwarding(keras.Model):
        def __init__(self, net, **kwargs):
            super().__init__(**kwargs)
            self.net = net

        def call(self, inputs, training=None):
            inputs = {k: v for k, v in inputs.items() if k != "task_id"}
            return self.net(next(iter(inputs.values())) if len(inputs) == 1 else inputs, training=training)

    return Forwarding(net)


def epoch_step_times(fit, data, batch_size, epochs, callbacks=()):
    """Calls `fit` for `1 + epochs` epochs; returns each epoch's seconds/step but the first's."""
    import keras

    starts, times = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - starts[-1]),
    )
    fit(**data, batch_size=batch_size, epochs=1 + epochs, shuffle=False,
        verbose=0, callbacks=[*callbacks, timer])
    steps = -(-len(data["y"]) // batch_size)
    return [t / steps for t in times[1:]]


def measure(workload, num_tasks, rounds, epochs, **workload_options):
    """Alternates plain and minimax fits; returns a result row (times in ms).

    `workload_options` go to the workload's function (`mlp`: `width`).
    """
    import keras
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust.callbacks import MirrorDescent
    from keras_taskrobust.rules import ExponentiatedGradient

    make_net, loss, batch_size, plain_data, minimax_data = WORKLOADS[workload](
        num_tasks, np.random.default_rng(0), **workload_options)
    keras.utils.set_random_seed(0)
    plain = make_net()
    keras.utils.set_random_seed(0)
    floor = forwarding_model(make_net())
    keras.utils.set_random_seed(0)
    minimax = MinimaxModel(make_net(), num_tasks=num_tasks)
    # No metrics on any (BertMaskedLM would add an accuracy by default).
    plain.compile(optimizer="adam", loss=loss, weighted_metrics=None)
    floor.compile(optimizer="adam", loss=loss)
    minimax.compile(optimizer="adam", loss=loss)

    # Keras' own `fit` for the plain net: keras-hub's task models override
    # `fit` with an input pipeline that preprocesses every batch (even with
    # `preprocessor=None`), which the wrappers do not get.
    fits = {
        "plain": lambda: epoch_step_times(functools.partial(keras.Model.fit, plain), plain_data, batch_size, epochs),
        "floor": lambda: epoch_step_times(floor.fit, minimax_data, batch_size, epochs),
        "minimax": lambda: epoch_step_times(minimax.fit, minimax_data, batch_size, epochs,
                                            [MirrorDescent(ExponentiatedGradient())]),
    }
    names = list(fits)
    times = {name: [] for name in names}
    ratios = {"floor": [], "minimax": []}
    for round_ in range(1 + rounds):  # round 0 compiles
        # Each round starts with the next model, so none always follows another.
        first = round_ % len(names)
        order = names[first:] + names[:first]
        samples = {name: fits[name]() for name in order}
        if round_:
            for name, sample in samples.items():
                times[name] += sample
            for name in ratios:
                ratios[name].append(statistics.median(samples[name]) / statistics.median(samples["plain"]))
    return {
        "backend": keras.backend.backend(), "workload": workload, "K": num_tasks,
        **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()},
        "ratio": statistics.median(ratios["minimax"]), "round_ratios": ratios["minimax"],
        "floor_ratio": statistics.median(ratios["floor"]),
    }


def measure_backend(rounds, epochs):
    """Yields a result row per workload and K, for the backend of this process."""
    for workload in WORKLOADS:
        for num_tasks in TASK_COUNTS:
            yield measure(workload, num_tasks, rounds, epochs)


def markdown_table(rows):
    lines = [
        "| backend | workload | K | plain ms/step | minimax ms/step | ratio "
        "| per-round ratios (min-max) | target | met | wrapper floor |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        target = TARGETS[r["backend"]]
        lines.append(
            f"| {r['backend']} | {r['workload']} | {r['K']} | {r['plain_ms']:.2f} "
            f"| {r['minimax_ms']:.2f} | {r['ratio']:.3f} "
            f"| {min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f} "
            f"| <= {target:.2f} | {'yes' if r['ratio'] <= target else 'no'} | {r['floor_ratio']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    per_backend.main(
        __file__, __doc__.splitlines()[0],
        {"rounds": (15, "plain/minimax alternations"), "epochs": (1, "timed epochs per fit")},
        measure_backend, markdown_table,
    )
