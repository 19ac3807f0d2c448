"""How fast is `MinimaxModel` against the Group DRO loop a PyTorch user would write?

The same MLP (64-256-256-10, logits), data (K = 8 task ids per example),
batch (128), optimizer (Adam, learning rate 1e-3, epsilon 1e-7) and step
size (0.01), trained by:

- `PyTorch Group DRO loop`: the reference training loop in plain PyTorch,
  as in the Group DRO authors' code (Sagawa et al. 2020, `loss.py`): the
  per-sample cross-entropy, the group means through a one-hot group map,
  exponentiated gradient on the group weights, the weighted loss,
  `backward`, `step`. Batches are slices of tensors held in memory (no
  `DataLoader`) and the authors' running statistics are left out: the
  fastest form of the loop;
- `plain Keras`: `keras.Model.fit` of the net, without task groups;
- `MinimaxModel + EG`: `MinimaxModel(net, num_tasks=8)` with
  `MirrorDescent(ExponentiatedGradient(0.01))`;
- `MinimaxModel + Lookahead`: with `MirrorDescent(Lookahead(
  representation="hidden_2"))` (gradients on the shared representation);
- with `--parts 1`, where `MinimaxModel + EG`'s time goes inside `fit`:
  `plain Keras, batch reader` (plain Keras with a callback that has a
  batch-end hook, as Keras' progress bar does: `fit` then hands every
  batch's logs to the loop's thread and waits for each step) and
  `MinimaxModel, no rule` (the task split, state and logs, and the guard
  that reads every batch's logs, without `MirrorDescent`), and on torch
  with `--compiled 1` the same compiled;
- on torch, with `--compiled 1`: `plain Keras, compiled` and
  `MinimaxModel + EG, compiled`, each compiled with `jit_compile=True`
  (`torch.compile`; about a minute each to compile).

Every backend runs the PyTorch loop in its own process, beside its Keras
variants, so that each ratio is measured side by side. Each backend's
default jit settings otherwise (XLA on JAX, `tf.function` on TensorFlow,
eager torch). Timing: `harness.py` (rounds alternated, epochs of 32 steps,
medians; ratios are medians of per-round ratios). Reported per variant: ms
per step, its ratio to the PyTorch loop, and to its baseline (what it is
built on) both as a ratio and as the difference in microseconds per step.

Usage:

    python benchmarks/head_to_head.py --all            # 3 backends, markdown table
    python benchmarks/head_to_head.py --backend torch  # one backend, JSON lines
"""

import statistics
import time

import numpy as np

import harness
import workloads

OPTIONS = {
    "rounds": (9, "alternations of the variants", 0),
    "epochs": (2, "timed epochs per fit"),
    "compiled": (1, "1: on torch, also the torch.compile variants", 0),
    "parts": (0, "1: also plain Keras with a batch reader and MinimaxModel without a rule", 1),
}
K, BATCH, STEPS, STEP_SIZE = 8, 128, 32, 0.01
LOOP = "PyTorch Group DRO loop"
# variant: the variant it is built on (ratio and added microseconds).
BASELINES = {
    "plain Keras": LOOP,
    "MinimaxModel + EG": "plain Keras",
    "MinimaxModel + Lookahead": "MinimaxModel + EG",
    "plain Keras, batch reader": "plain Keras",
    "MinimaxModel, no rule": "plain Keras",
    "plain Keras, compiled": "plain Keras",
    "MinimaxModel + EG, compiled": "plain Keras, compiled",
    "MinimaxModel, no rule, compiled": "plain Keras, compiled",
}
# (variant, backend or None for all, against LOOP or the baseline, at most).
TARGETS = [
    ("MinimaxModel + EG", "jax", LOOP, 0.5),
    ("MinimaxModel + Lookahead", None, "baseline", 1.3),
    ("MinimaxModel + EG, compiled", "torch", "baseline", 1.10),
]


def task_data(rng):
    n = BATCH * (2 if harness.SMOKE else STEPS)
    return (rng.normal(size=(n, 64)).astype("float32"), rng.integers(0, 10, n).astype("int32"),
            rng.integers(0, K, n).astype("int32"))


def torch_group_dro_loop(features, labels, task_ids, epochs):
    """`run()` -> seconds per step of each of `epochs` epochs of the reference loop."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    criterion = torch.nn.CrossEntropyLoss(reduction="none")
    x, y, g = torch.from_numpy(features), torch.from_numpy(labels).long(), torch.from_numpy(task_ids).long()
    groups = torch.arange(K).unsqueeze(1)
    steps = len(y) // BATCH
    adv_probs = torch.ones(K) / K

    def run():
        nonlocal adv_probs
        times = []
        for _ in range(epochs):
            start = time.perf_counter()
            for b in range(steps):
                s = slice(b * BATCH, (b + 1) * BATCH)
                per_sample = criterion(net(x[s]), y[s])
                group_map = (g[s] == groups).float()
                group_count = group_map.sum(1)
                group_loss = group_map @ per_sample / (group_count + (group_count == 0).float())
                adv_probs = adv_probs * torch.exp(STEP_SIZE * group_loss.detach())
                adv_probs = adv_probs / adv_probs.sum()
                loss = group_loss @ adv_probs
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            times.append((time.perf_counter() - start) / steps)
        return times

    return run


def keras_runs(features, labels, task_ids, epochs, compiled, parts=0):
    """`{variant: run()}` for the Keras variants of this backend."""
    import functools

    import keras
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust import rules
    from keras_taskrobust.callbacks import MirrorDescent

    def net():
        keras.utils.set_random_seed(0)
        return workloads.mlp(output_activation=None)

    def compiled_model(model, jit_compile="auto"):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    plain_data = {"x": features, "y": labels}
    minimax_data = {"x": {"features": features, "task_id": task_ids}, "y": labels}

    class BatchReader(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    def plain(jit_compile="auto", callbacks=lambda: []):
        model = compiled_model(net(), jit_compile)
        fit = functools.partial(keras.Model.fit, model)
        return lambda: harness.epoch_step_times(fit, plain_data, BATCH, epochs, callbacks())

    def minimax(rule, jit_compile="auto"):
        model = compiled_model(MinimaxModel(net(), num_tasks=K), jit_compile)
        callbacks = lambda: [] if rule is None else [MirrorDescent(rule())]
        return lambda: harness.epoch_step_times(model.fit, minimax_data, BATCH, epochs, callbacks())

    runs = {
        "plain Keras": plain(),
        "MinimaxModel + EG": minimax(lambda: rules.ExponentiatedGradient(STEP_SIZE)),
        "MinimaxModel + Lookahead": minimax(lambda: rules.Lookahead(representation="hidden_2")),
    }
    if parts:
        runs["plain Keras, batch reader"] = plain(callbacks=lambda: [BatchReader()])
        runs["MinimaxModel, no rule"] = minimax(None)
    if compiled and keras.backend.backend() == "torch":
        runs["plain Keras, compiled"] = plain(jit_compile=True)
        runs["MinimaxModel + EG, compiled"] = minimax(lambda: rules.ExponentiatedGradient(STEP_SIZE), jit_compile=True)
        if parts:
            runs["MinimaxModel, no rule, compiled"] = minimax(None, jit_compile=True)
    return runs


def measure_backend(rounds, epochs, compiled, parts):
    import keras

    features, labels, task_ids = task_data(np.random.default_rng(0))
    runs = {LOOP: torch_group_dro_loop(features, labels, task_ids, epochs),
            **keras_runs(features, labels, task_ids, epochs, compiled, parts)}
    samples, medians = harness.alternate(runs, rounds)
    for name in runs:
        row = {"backend": keras.backend.backend(), "variant": name, "ms": 1e3 * statistics.median(samples[name]),
               "vs_loop": harness.ratio(medians, name, LOOP)}
        if name in BASELINES:
            baseline = BASELINES[name]
            row.update(baseline=baseline, vs_baseline=harness.ratio(medians, name, baseline),
                       added_us=1e6 * statistics.median(a - b for a, b in zip(medians[name], medians[baseline])))
        yield row


def target(row):
    """`(text, met, against)` of the target that applies to `row` (against `LOOP` or "baseline"), or `None`."""
    for variant, backend, against, at_most in TARGETS:
        if row["variant"] == variant and backend in (None, row["backend"]):
            value = row["vs_loop"] if against == LOOP else row["vs_baseline"]
            name = "the PyTorch loop" if against == LOOP else row["baseline"]
            return f"<= {at_most:.2f} x {name}", value <= at_most, against
    return None


def markdown_table(rows):
    lines = [
        "| backend | variant | ms/step | x PyTorch loop | baseline | x baseline | + us/step | target | met |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        goal = target(r)
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['ms']:.2f} | {r['vs_loop']:.2f} | {r.get('baseline', '')} "
            + (f"| {r['vs_baseline']:.2f} | {r['added_us']:+.0f} " if "baseline" in r else "| | ")
            + (f"| {goal[0]} | {'yes' if goal[1] else 'no'} |" if goal else "| | |")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(__file__, __doc__.splitlines()[0], OPTIONS, measure_backend, markdown_table)
