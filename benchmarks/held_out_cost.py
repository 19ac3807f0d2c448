"""What the held-out signal costs: `MirrorDescent(held_out=...)` against the training signal.

The same `MinimaxModel` (overhead.py's MLP workload, K = 8, batch 256) is fit
with `MirrorDescent(ExponentiatedGradient())` on the training batch's group
losses, and with the same rule on held-out losses measured every
`--every` steps on `--held-out` examples (a forward pass in inference mode,
outside the training step). After a warm-up fit of each, the two fits
alternate for `--rounds` rounds; each gives per-epoch step times (overhead.
epoch_step_times). Reported: each one's median step time and the median of
the per-round ratios held-out / training, with their range.

Usage: `python benchmarks/held_out_cost.py --all` (or `--backend B`).
"""

import numpy as np

import harness
from harness import epoch_step_times
from workloads import mlp_workload

OPTIONS = {
    "rounds": (5, "alternated rounds"), "epochs": (2, "timed epochs per fit"),
    "every": (10, "steps between held-out measurements", 1), "held_out": (800, "held-out examples", 16),
}


def measure(rounds, epochs, every, held_out_size):
    import keras

    from keras_taskrobust import MinimaxModel
    from keras_taskrobust import rules
    from keras_taskrobust.callbacks import MirrorDescent

    rng = np.random.default_rng(0)
    make_net, loss, batch_size, _, data = mlp_workload(8, rng)
    held_out = (
        {"features": rng.normal(size=(held_out_size, 64)).astype("float32"),
         "task_id": (np.arange(held_out_size) % 8).astype("int32")},
        rng.integers(0, 10, held_out_size).astype("int32"),
    )
    models, callbacks = {}, {
        "training": lambda: [MirrorDescent(rules.ExponentiatedGradient())],
        "held_out": lambda: [MirrorDescent(rules.ExponentiatedGradient(), update_every=every, held_out=held_out)],
    }
    for name in callbacks:
        keras.utils.set_random_seed(0)
        models[name] = MinimaxModel(make_net(), num_tasks=8)
        models[name].compile(optimizer="adam", loss=loss)
        epoch_step_times(models[name].fit, data, batch_size, 1, callbacks[name]())  # compiles
    times = {name: [] for name in callbacks}
    ratios = []
    for round_ in range(rounds):
        order = list(callbacks) if round_ % 2 == 0 else list(reversed(callbacks))
        medians = {}
        for name in order:
            samples = epoch_step_times(models[name].fit, data, batch_size, epochs, callbacks[name]())
            times[name] += samples
            medians[name] = float(np.median(samples))
        ratios.append(medians["held_out"] / medians["training"])
    return {
        "backend": keras.backend.backend(),
        "every": every,
        "held_out_examples": held_out_size,
        "training_signal_ms": round(1e3 * float(np.median(times["training"])), 3),
        "held_out_signal_ms": round(1e3 * float(np.median(times["held_out"])), 3),
        "ratio": round(float(np.median(ratios)), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def measure_backend(rounds, epochs, every, held_out):
    yield measure(rounds, epochs, every, held_out)


def markdown_table(rows):
    lines = ["| backend | every | held-out examples | training signal ms/step | held-out signal ms/step | ratio (range) |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['every']} | {r['held_out_examples']} | {r['training_signal_ms']:.2f} "
                     f"| {r['held_out_signal_ms']:.2f} | {r['ratio']:.3f} ({r['ratio_range'][0]}-{r['ratio_range'][1]}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(__file__, __doc__.splitlines()[0], OPTIONS, measure_backend, markdown_table)
