"""Step time on 1 against 4 simulated JAX devices, for the same global batch.

The MLP workload of `overhead.py` (64 inputs, Dense(256) x 2, 10 classes,
global batch 256, K = 8 task ids per example, Adam) fit on one device and
under `keras.distribution.DataParallel` over 4 CPU devices simulated with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`, for: plain Keras (no
task groups, for reference), `MinimaxModel` with `ExponentiatedGradient`,
and `MinimaxModel` with `Lookahead` on the shared representation. All fits
run in one process and alternate for `--rounds` rounds after a warm-up
round; each gives `--epochs` timed epochs (see `overhead.py`). Reported:
median ms/step on 1 and on 4 devices, the ratio of the medians, and the
range of the per-round ratios.

The 4 "devices" share the machine's cores, so this measures the cost of
sharding and of the cross-device reductions, not a speed-up.

Usage:

    python benchmarks/distributed_overhead.py --rounds 3 --epochs 2
"""

import argparse
import contextlib
import json
import os
import statistics

import numpy as np

import harness
from harness import epoch_step_times
from workloads import mlp
from workloads import mlp_workload

K = 8


def variants():
    """`{name: (make_model, callbacks)}`: plain Keras and two weighting rules."""
    import keras
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust import rules
    from keras_taskrobust.callbacks import MirrorDescent

    def net():
        keras.utils.set_random_seed(0)
        return mlp()

    def minimax():
        return MinimaxModel(net(), num_tasks=K)

    return {
        "plain Keras": (net, lambda: []),
        "MinimaxModel, ExponentiatedGradient": (minimax, lambda: [MirrorDescent(rules.ExponentiatedGradient())]),
        "MinimaxModel, Lookahead (representation)": (
            minimax, lambda: [MirrorDescent(rules.Lookahead(representation="hidden_2"))]),
    }


def measure(rounds, epochs):
    import keras

    devices = keras.distribution.list_devices()
    _, loss, batch_size, plain_data, minimax_data = mlp_workload(K, np.random.default_rng(0))
    scopes = {
        "1 device": contextlib.nullcontext,
        f"{len(devices)} devices (DataParallel)": keras.distribution.DataParallel(devices=devices).scope,
    }
    runs = {}
    for name, (make_model, callbacks) in list(variants().items())[:1 if harness.SMOKE else None]:
        for where, scope in scopes.items():
            with scope():
                model = make_model()
                model.compile(optimizer="adam", loss=loss)
            data = plain_data if name == "plain Keras" else minimax_data
            runs[name, where] = (model, scope, data, callbacks)
    times = {key: [] for key in runs}
    round_ratios = {name: [] for name, _ in runs}
    for round_ in range(1 + rounds):  # round 0 compiles and warms up
        for key, (model, scope, data, callbacks) in runs.items():
            with scope():
                t = epoch_step_times(model.fit, data, batch_size, epochs, callbacks())
            if round_:
                times[key] += t
                name, where = key
                if where != "1 device":
                    round_ratios[name].append(statistics.median(t) / statistics.median(times[name, "1 device"][-epochs:]))
    rows = []
    for name in round_ratios:
        one, four = (statistics.median(times[name, where]) for where in scopes)
        rows.append({"model": name, "ms_1_device": 1e3 * one, "ms_4_devices": 1e3 * four, "ratio": four / one,
                     "round_ratios": round_ratios[name]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one tiny round: check that it runs")
    args = parser.parse_args()
    harness.SMOKE = args.smoke
    rows = measure(1, 1) if args.smoke else measure(args.rounds, args.epochs)
    print("| model | ms/step, 1 device | ms/step, 4 devices | ratio 4 / 1 | per-round ratios (min-max) |\n"
          "|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['ms_1_device']:.2f} | {r['ms_4_devices']:.2f} | {r['ratio']:.2f} "
              f"| {min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f} |")


if __name__ == "__main__":
    # Before JAX starts: 4 host devices.
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    main()
