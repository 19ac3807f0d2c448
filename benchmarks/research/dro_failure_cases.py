"""DRO's failure cases in multitask training: ERM, Group DRO, Softmax, Lookahead.

A controlled synthetic problem (`keras_taskrobust.data.synthetic_tasks`):
binary tasks with quadratic boundaries sharing one small network.

- (a) noisy: 6 tasks, the last with coin-flip labels (irreducible loss);
- (b) duplicated: 6 tasks, tasks 2-5 copies of task 1 (2 distinct tasks);
- (c) sizes: 6 tasks of 3000, 1500, 600, 300, 150 and 60 training examples.

For each case, rule and seed, one network is trained with the same budget
and the held-out accuracy of every task is measured. The table reports the
mean (and standard deviation over seeds) of the average and worst accuracy
over the learnable tasks and over all tasks, and the final task weights.

Run (about 5 minutes on 2 CPU cores with JAX):

    KERAS_BACKEND=jax python benchmarks/research/dro_failure_cases.py --seeds 3 --write
"""

import argparse
import datetime
import pathlib
import time

import numpy as np

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.data import synthetic_tasks

K, FEATURES = 6, 6
CASES = {
    "a_noisy": dict(examples_per_task=1000, noisy_tasks=[5]),
    "b_duplicated": dict(examples_per_task=1000, duplicate_of={2: 1, 3: 1, 4: 1, 5: 1}),
    "c_sizes": dict(examples_per_task=[3000, 1500, 600, 300, 150, 60]),
}
# rule: case -> the `MirrorDescent` of that case (`None`: the weights stay uniform).
RULES = {
    "ERM (Uniform)": lambda case: None,
    "ExponentiatedGradient": lambda case: MirrorDescent(rules.ExponentiatedGradient(step_size=0.05)),
    "Softmax": lambda case: MirrorDescent(rules.Softmax(temperature=0.1)),
    "Lookahead": lambda case: MirrorDescent(rules.Lookahead(representation="trunk2")),
    # The excess over each task's floor: the cross-entropy of a fair coin,
    # log 2, for a task with coin-flip labels, 0 for a learnable one.
    "EG on the excess": lambda case: MirrorDescent(
        rules.ExponentiatedGradient(step_size=0.05),
        reference_losses=[float(np.log(2)) if t in CASES[case].get("noisy_tasks", []) else 0.0 for t in range(K)],
    ),
}
RESULTS = pathlib.Path(__file__).parents[1] / "RESULTS.md"
SECTION = "## Where does plain DRO fail in multitask training?"


def network():
    features = keras.Input((FEATURES,), name="features")
    task = keras.Input((K,), name="task")
    h = keras.layers.Concatenate()([features, task])
    h = keras.layers.Dense(32, activation="relu", name="trunk1")(h)
    h = keras.layers.Dense(32, activation="relu", name="trunk2")(h)
    return keras.Model([features, task], keras.layers.Dense(2, name="head")(h))


def run(case, rule, seed, epochs):
    (x, y), (x_test, y_test) = synthetic_tasks(num_tasks=K, num_features=FEATURES, seed=seed, **CASES[case])
    keras.utils.set_random_seed(seed)
    model = MinimaxModel(network(), num_tasks=K)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    descent = RULES[rule](case)
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[descent] if descent else [])
    predicted = keras.ops.convert_to_numpy(model.predict(x_test, batch_size=1024, verbose=0)).argmax(-1)
    accuracy = np.array([(predicted == y_test)[x_test["task_id"] == t].mean() for t in range(K)])
    return accuracy, model.task_weights.numpy()


def summarise(case, accuracies, weights):
    learnable = [t for t in range(K) if t not in CASES[case].get("noisy_tasks", [])]
    a = np.array(accuracies)
    stats = {
        "learnable mean": a[:, learnable].mean(1),
        "learnable worst": a[:, learnable].min(1),
        "all mean": a.mean(1),
        "all worst": a.min(1),
    }
    cells = [f"{v.mean():.3f} ± {v.std():.3f}" for v in stats.values()]
    w = np.mean(weights, axis=0)
    return cells + ["[" + ", ".join(f"{x:.2f}" for x in w) + "]"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--write", action="store_true", help=f"replace the section of {RESULTS.name}")
    args = parser.parse_args()
    header = ("| case | rule | learnable mean | learnable worst | all mean | all worst | final weights (mean over seeds) |\n"
              "|---|---|---|---|---|---|---|")
    rows, start = [header], time.time()
    for case in args.cases:
        for rule in args.rules:
            results = [run(case, rule, seed, args.epochs) for seed in range(args.seeds)]
            cells = summarise(case, *zip(*results))
            rows.append(f"| {case} | {rule} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(f"{time.time() - start:.0f} s")
    if args.write:
        text = (
            f"{SECTION}\n\n"
            f"Command: `KERAS_BACKEND={keras.backend.backend()} python benchmarks/research/dro_failure_cases.py "
            f"--seeds {args.seeds} --epochs {args.epochs} --write` ({datetime.date.today()}, 2 shared CPU cores).\n"
            f"Held-out accuracy, mean ± standard deviation over {args.seeds} seeds; "
            "\"learnable\" leaves out the noisy task of case (a).\n\n"
            f"{table}\n"
        )
        replace_section(text)


def replace_section(text):
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION in old:
        before, rest = old.split(SECTION, 1)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        new = before + text + after
    else:
        new = old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new)


if __name__ == "__main__":
    main()
