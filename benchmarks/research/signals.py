"""Which weighting signal beats uniform task weights on the main job's worst view?

Pre-trains the main job's model (recipe `views`: four views of the same
digits, a 16-unit representation, linear probes per view) with uniform task
weights, on the pooled average loss (`average`), and with each rule and
signal, on the same data, seed and
budget, and prints per arm the mean and worst linear-probe accuracy over
seeds, and the paired difference to `uniform` on each seed (mean ± standard
deviation over seeds).

    python benchmarks/research/signals.py --seeds 3 [--arms NAME ...] [--quick]

The `excess` signals use the `uniform` run's model of the same seed as the
reference (DoReMi). About 40 s an arm and seed on one CPU core.
"""

import argparse
import time
import types

import numpy as np

from keras_taskrobust import rules
from keras_taskrobust.data import load_domains
from keras_taskrobust.recipes import digit_views
from keras_taskrobust.recipes import robust_arms

# name: (rule, signal) -- signal "held_out", "excess" or "training"; `average`: the pooled loss, no rule.
ARMS = {
    "average": (None, None),
    # The rules as a user first tries them: on the training batch, every step.
    "eg_training": (lambda: rules.ExponentiatedGradient(0.01, smoothing=0.01), "training"),
    "softmax_training": (lambda: rules.Softmax(), "training"),
    "hard_max_training": (lambda: rules.HardMax(), "training"),
    "eg_excess": (lambda: rules.ExponentiatedGradient(0.1, smoothing=0.01), "excess"),
    "eg_held_out": (lambda: rules.ExponentiatedGradient(0.1, smoothing=0.01), "held_out"),
    "progress_held_out": (lambda: rules.LearningProgress(10.0, smoothing=0.05), "held_out"),
    "progress_excess": (lambda: rules.LearningProgress(10.0, smoothing=0.05), "excess"),
    "progress_loss_weighted": (lambda: rules.LearningProgress(10.0, smoothing=0.05, loss_weighted=True), "held_out"),
    "progress_training": (lambda: rules.LearningProgress(10.0, smoothing=0.05, average=0.9), "training"),
    # G over all weights: on the 16-unit representation its entries are ~100x smaller than the losses.
    "lookahead_held_out": (lambda: rules.Lookahead(learning_rate=1.0, entropy=0.1), "held_out"),
    "lookahead_excess": (lambda: rules.Lookahead(learning_rate=1.0, entropy=0.1), "excess"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--update-every", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: checks that every arm runs.")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    sizes = digit_views._Sizes(args.quick)
    parts = [load_domains(split)["clean"] for split in ("train", "test")]
    images, labels = (np.concatenate(a) for a in zip(*parts))
    results = {arm: [] for arm in ("uniform", *args.arms)}
    for seed in range(args.seeds):
        data = digit_views._split(images, labels, sizes, seed)
        settings = types.SimpleNamespace(learning_rate=3e-3, batch_size=64, verbose=0, update_every=args.update_every)
        start = time.perf_counter()
        scores, _, reference = digit_views._pretrain_and_probe(data, "uniform", None, settings, epochs, seed)
        results["uniform"].append(scores["downstream"])
        print(f"seed {seed} uniform: {_line(scores)} ({time.perf_counter() - start:.0f} s)", flush=True)
        for arm in args.arms:
            make_rule, signal = ARMS[arm]
            robust = make_rule and robust_arms.Arm(arm, make_rule(), signal)
            start = time.perf_counter()
            scores, _, _ = digit_views._pretrain_and_probe(
                data, arm, robust, settings, epochs, seed, reference=reference)
            results[arm].append(scores["downstream"])
            weights = " ".join(f"{w:.2f}" for w in scores["task_weights"].values())
            print(f"seed {seed} {arm}: {_line(scores)} weights {weights} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    print(_table(results))


def _line(scores):
    return "  ".join(f"{view} {score:.3f}" for view, score in scores["downstream"].items())


def _table(results):
    views = list(digit_views.VIEWS)
    uniform = np.array([[r[v] for v in views] for r in results["uniform"]])
    lines = ["| arm | " + " | ".join(views) + " | mean | worst | worst - uniform | mean - uniform |",
             "|---|" + "---|" * (len(views) + 4)]
    cell = lambda a: f"{a.mean():.3f} ± {a.std():.3f}"
    for arm, runs in results.items():
        scores = np.array([[r[v] for v in views] for r in runs])
        worst, mean = scores.min(axis=1), scores.mean(axis=1)
        lines.append(f"| {arm} | " + " | ".join(f"{s:.3f}" for s in scores.mean(axis=0))
                     + f" | {cell(mean)} | {cell(worst)} | {cell(worst - uniform.min(axis=1))}"
                     + f" | {cell(mean - uniform.mean(axis=1))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
