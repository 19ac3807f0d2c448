"""What does `MinimaxModel` cost over plain `fit` on realistic workloads?

The median training step of `MinimaxModel(net, num_tasks=K)` fit with
`MirrorDescent(ExponentiatedGradient())` against plain `keras.Model.fit` of
the same net (architecture, initial weights, Adam, data), K = 8 and 256, on
the shared workloads (`workloads.py`): `mlp` (64-256-256-10, batch 256),
`bert` (a tiny keras-hub `BertMaskedLM`, one task id per masked position;
its baseline is `keras.Model.fit(net)`, not keras-hub's `fit`, which adds an
input pipeline) and `cnn` (the main job's network, batch 64). Each backend's
default jit settings (XLA on JAX, `tf.function` on TensorFlow, eager torch).

A third model gives the floor: `Forwarding`, a `keras.Model` that drops the
task ids and calls the net: what any wrapper with a task-id input costs in
Keras' trainer. Timing: `harness.py` (rounds alternated, medians).
`step_overhead.py` times the training step itself, without `fit`.

Usage:

    python benchmarks/overhead.py --all            # 3 backends, markdown table
    python benchmarks/overhead.py --backend torch  # one backend, JSON lines
"""

import functools
import statistics

import numpy as np

import harness
from harness import epoch_step_times
from workloads import WORKLOADS
from workloads import forwarding_model

TARGETS = {"jax": 1.05, "tensorflow": 1.05, "torch": 1.10}
TASK_COUNTS = (8, 256)
OPTIONS = {"rounds": (15, "plain/minimax alternations", 0), "epochs": (1, "timed epochs per fit")}


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
    times, medians = harness.alternate(fits, rounds)
    ratios = {name: [a / b for a, b in zip(medians[name], medians["plain"])] for name in ("floor", "minimax")}
    return {
        "backend": keras.backend.backend(), "workload": workload, "K": num_tasks,
        **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()},
        "ratio": statistics.median(ratios["minimax"]), "round_ratios": ratios["minimax"],
        "floor_ratio": statistics.median(ratios["floor"]),
    }


def measure_backend(rounds, epochs):
    """Yields a result row per workload and K, for the backend of this process."""
    for workload in list(WORKLOADS)[:1] if harness.SMOKE else WORKLOADS:
        for num_tasks in TASK_COUNTS[:1] if harness.SMOKE else TASK_COUNTS:
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
    harness.main(
        __file__, __doc__.splitlines()[0],
        OPTIONS, measure_backend, markdown_table,
    )
