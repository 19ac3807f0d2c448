"""Step time of Lookahead against ExponentiatedGradient, at K = 8.

The MLP workload of `overhead.py` (64 inputs, Dense(256) x 2, 10 classes,
batch 256, one task id per example), trained by `MinimaxModel` with
`MirrorDescent(ExponentiatedGradient())`, and with `Lookahead` computing `G`
on the shared representation (the output of `hidden_2`), on the weights of
`hidden_2`, and on all trainable weights. The four fits
alternate for `--rounds` rounds after a warm-up round (compilation; later
fits reuse the compiled steps); each gives `--epochs` timed epochs (see
`overhead.py`). Reported: median ms/step, and the ratio to
ExponentiatedGradient as the median over rounds of each round's ratio (a
round takes a second or two). Target: at most 1.5 with `G` on the shared
representation.

Usage:

    python benchmarks/lookahead_overhead.py --all
"""

import statistics

import numpy as np

from overhead import epoch_step_times
import per_backend

K = 8


def variants():
    from keras_taskrobust import rules

    return {
        "ExponentiatedGradient": rules.ExponentiatedGradient(),
        "Lookahead (representation hidden_2)": rules.Lookahead(representation="hidden_2"),
        "Lookahead (hidden_2 weights)": rules.Lookahead(layers=["hidden_2"]),
        "Lookahead (all weights)": rules.Lookahead(),
    }


def measure(rounds, epochs):
    import keras
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust.callbacks import MirrorDescent

    rng = np.random.default_rng(0)
    n = 256 * 32
    data = {
        "x": {"features": rng.normal(size=(n, 64)).astype("float32"),
              "task_id": rng.integers(0, K, n).astype("int32")},
        "y": rng.integers(0, 10, n).astype("int32"),
    }
    models = {}
    for name, rule in variants().items():
        keras.utils.set_random_seed(0)
        net = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu", name="hidden_1"),
            keras.layers.Dense(256, activation="relu", name="hidden_2"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ])
        model = MinimaxModel(net, num_tasks=K)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        models[name] = (model, rule)
    times = {name: [] for name in models}
    ratios = {name: [] for name in models}
    for round_ in range(1 + rounds):
        medians = {}
        for name, (model, rule) in models.items():
            t = epoch_step_times(model.fit, data, 256, epochs, [MirrorDescent(rule)])
            medians[name] = statistics.median(t)
            if round_:  # round 0 compiles
                times[name] += t
        if round_:
            for name in models:
                ratios[name].append(medians[name] / medians["ExponentiatedGradient"])
    for name in models:
        yield {"backend": keras.backend.backend(), "rule": name,
               "ms": 1e3 * statistics.median(times[name]), "ratio": statistics.median(ratios[name])}


def markdown_table(rows):
    lines = ["| backend | rule | ms/step | ratio to ExponentiatedGradient |", "|---|---|---:|---:|"]
    lines += [f"| {r['backend']} | {r['rule']} | {r['ms']:.2f} | {r['ratio']:.2f} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    per_backend.main(
        __file__, __doc__.splitlines()[0],
        {"rounds": (10, "alternations of the four fits"), "epochs": (1, "timed epochs per fit")},
        measure, markdown_table,
    )
