"""MinimaxModel's compiled JAX training step against the plain one, by K.

`overhead.py` times whole `fit` epochs, and on JAX its MLP rows (a 1.3-1.8 ms
step) move by more than the task logic between runs. This times the step
itself: Keras' own jitted `train_function`, called on one batch already on
the device, for the plain MLP of `overhead.py` and for
`MinimaxModel(net, num_tasks=K)` with `MirrorDescent(ExponentiatedGradient())`
attached (the callback's `on_train_begin`, as `fit` calls it), timed by
`step_overhead.step_timer` (`step_overhead.py` times the same step on every
backend, at K = 8 and 256, with the wrapper floor). The two
alternate for `--rounds` rounds of 100 steps each; reported: the median step
time of each and the median over rounds of each round's ratio.

K = 8 and 256 are `overhead.py`'s; 240 and 512 show whether the excess grows
with K. Run it once as is and once with
`XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`, to see the
part that XLA's CPU scheduler adds to the step as compiled for this machine.

Usage:

    python benchmarks/jax_step_by_task_count.py --rounds 21  # sets KERAS_BACKEND=jax itself
    python benchmarks/jax_step_by_task_count.py --task-counts 255,256  # other values of K
"""

import argparse
import os
import statistics

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import overhead  # noqa: E402
from keras_taskrobust import MinimaxModel  # noqa: E402
from keras_taskrobust.callbacks import MirrorDescent  # noqa: E402
from keras_taskrobust.rules import ExponentiatedGradient  # noqa: E402
from step_overhead import step_timer  # noqa: E402

TASK_COUNTS = (8, 240, 256, 512)


def measure(num_tasks, rounds):
    make_net, loss, batch_size, plain_data, minimax_data = overhead.mlp_workload(num_tasks, np.random.default_rng(0))
    keras.utils.set_random_seed(0)
    plain = make_net()
    keras.utils.set_random_seed(0)
    minimax = MinimaxModel(make_net(), num_tasks=num_tasks)
    plain.compile(optimizer="adam", loss=loss)
    minimax.compile(optimizer="adam", loss=loss)
    steps = {
        "plain": step_timer(plain, plain_data, batch_size),
        "minimax": step_timer(minimax, minimax_data, batch_size, [MirrorDescent(ExponentiatedGradient())]),
    }
    times = {name: [] for name in steps}
    for round_ in range(rounds):
        for name in (list(steps) if round_ % 2 == 0 else list(steps)[::-1]):
            times[name].append(steps[name]())
    ratios = [m / p for m, p in zip(times["minimax"], times["plain"])]
    plain_us, minimax_us = (1e6 * statistics.median(times[name]) for name in steps)
    return {"K": num_tasks, "plain_us": plain_us, "minimax_us": minimax_us,
            "excess_us": minimax_us - plain_us, "ratio": statistics.median(ratios),
            "round_ratios": (min(ratios), max(ratios))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="plain/minimax alternations")
    parser.add_argument("--task-counts", default=",".join(map(str, TASK_COUNTS)),
                        help="comma-separated values of K (default: %(default)s)")
    args = parser.parse_args()
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\n")
    print("| K | plain us/step | minimax us/step | minimax - plain (us) | ratio | per-round ratios (min-max) |")
    print("|---:|---:|---:|---:|---:|---|")
    for num_tasks in map(int, args.task_counts.split(",")):
        r = measure(num_tasks, args.rounds)
        low, high = r["round_ratios"]
        print(f"| {r['K']} | {r['plain_us']:.0f} | {r['minimax_us']:.0f} | {r['excess_us']:.0f} "
              f"| {r['ratio']:.3f} | {low:.2f}-{high:.2f} |", flush=True)


if __name__ == "__main__":
    main()
