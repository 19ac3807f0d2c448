"""
Title: Getting started with keras-taskrobust
Author: keras-taskrobust developers
Date created: 2026/11/22
Last modified: 2026/12/03
Description: Train a model on the worst of several tasks with MinimaxModel and MirrorDescent.
"""

"""
## Setup

keras-taskrobust runs on JAX, TensorFlow and PyTorch: set `KERAS_BACKEND`
before importing Keras. Nothing in this guide downloads anything.
"""

import numpy as np

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent

keras.utils.set_random_seed(0)

"""
## A problem with tasks of unequal difficulty

Three regression tasks share one network. Each example carries the id of its
task. Task `"wiggly"` is harder than the others (a higher-frequency target),
and it is the smallest.
"""

rng = np.random.default_rng(0)
sizes = {"linear": 2000, "smooth": 1500, "wiggly": 300}
features, targets, task_ids = [], [], []
for task, (name, n) in enumerate(sizes.items()):
    x = rng.uniform(-2, 2, size=(n, 1)).astype("float32")
    y = {"linear": 0.5 * x, "smooth": np.sin(x), "wiggly": np.sin(4 * x)}[name]
    features.append(x)
    targets.append(y + 0.05 * rng.normal(size=y.shape).astype("float32"))
    task_ids.append(np.full(n, task, "int32"))
order = rng.permutation(sum(sizes.values()))
features, targets, task_ids = (np.concatenate(a)[order] for a in (features, targets, task_ids))

"""
`MinimaxModel` takes the task ids from the input dict, under the key
`task_id` (configurable with `task_key`); the wrapped network only sees the
other inputs.
"""

x = {"features": features, "task_id": task_ids}


def build_network():
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )


"""
## The average-loss baseline and a robust rule

Without a `MirrorDescent` callback the task weights stay uniform: the model
minimises the mean of the three task losses. With
`MirrorDescent(ExponentiatedGradient(...))` the weights move towards the
tasks with the largest loss (Group DRO's mirror ascent), every step, inside
the compiled training step.
"""

results = {}
for label, callbacks in {
    "uniform": [],
    "robust": [MirrorDescent(rules.ExponentiatedGradient(step_size=0.05), warmup_steps=20)],
}.items():
    keras.utils.set_random_seed(0)
    model = MinimaxModel(build_network(), task_names=list(sizes))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, targets, batch_size=128, epochs=8, verbose=0, callbacks=callbacks)
    results[label] = (model, history)

"""
Every task's loss and weight is in `History` (and in the progress bar,
`CSVLogger` and `TensorBoard`) under `loss/<task>` and `weight/<task>`,
together with `loss/worst`.
"""

print(f"{'':8s}" + "".join(f"{name:>10s}" for name in sizes) + f"{'worst':>10s}")
for label, (model, history) in results.items():
    logs = model.evaluate(x, targets, batch_size=512, return_dict=True, verbose=0)
    row = "".join(f"{logs[f'loss/{name}']:10.4f}" for name in sizes)
    print(f"{label:8s}{row}{logs['loss/worst']:10.4f}")
    weights = [history.history[f"weight/{name}"][-1] for name in sizes]
    print(f"{'weights':8s}" + "".join(f"{w:10.3f}" for w in weights))

"""
The robust model moves weight onto the wiggly task and brings its loss (the
worst) down, at some cost on the easy tasks.

## Which losses should the rule follow?

By default the rule follows the training batch's task losses. Two things
can make them a poor guide:

- a small task's *training* loss falls as the network memorises it, long
  before the task is learnt: the rule stops seeing it;
- a task with *irreducible* loss (label noise, unpredictable targets)
  keeps the largest loss forever, whatever the model does: the rule piles
  weight on it and the other tasks pay.

Add a fourth task, `"noisy"`: the smooth target with label noise of
standard deviation 1, so that its mean squared error cannot go below 1.
`MirrorDescent(held_out=...)` measures each task's loss on held-out data
every `update_every` steps, outside the training step, and runs the rule on
those. `reference_losses=[...]` makes the rule see each task's *excess*
loss over a reference, clipped at 0 (DoReMi): here the noise floors, the
variance of each task's label noise. Where the floors are not known,
`reference=model` takes the excess over a reference model's loss on the
same held-out examples (e.g. a model trained briefly with uniform weights).
"""


def make_tasks(n_per_task, seed):
    """`(x, y)` of the four tasks, `n_per_task[name]` examples each."""
    rng = np.random.default_rng(seed)
    xs, ys, ids = [], [], []
    for task, (name, n) in enumerate(n_per_task.items()):
        x = rng.uniform(-2, 2, size=(n, 1)).astype("float32")
        clean = {"linear": 0.5 * x, "smooth": np.sin(x), "wiggly": np.sin(4 * x), "noisy": np.sin(x)}[name]
        noise = NOISE[name]
        xs.append(x)
        ys.append((clean + noise * rng.normal(size=x.shape)).astype("float32"))
        ids.append(np.full(n, task, "int32"))
    return {"features": np.concatenate(xs), "task_id": np.concatenate(ids)}, np.concatenate(ys)


NOISE = {"linear": 0.05, "smooth": 0.05, "wiggly": 0.05, "noisy": 1.0}  # label noise, standard deviation
four = {**sizes, "noisy": 300}
x4, y4 = make_tasks(four, seed=1)
held_out = make_tasks({name: 100 for name in four}, seed=2)


def train(callbacks, epochs=8):
    keras.utils.set_random_seed(0)
    model = MinimaxModel(build_network(), task_names=list(four))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    trace = []  # the weights after every step: `weight/<task>` is in every batch's logs
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: trace.append([logs[f"weight/{name}"] for name in four])
    )
    model.fit(x4, y4, batch_size=128, epochs=epochs, verbose=0, shuffle=True, callbacks=[*callbacks, record])
    return model, np.array(trace)


eg = rules.ExponentiatedGradient(step_size=0.5, smoothing=0.01)
floors = [NOISE[name] ** 2 for name in four]
signals = {
    "training losses": [MirrorDescent(eg, warmup_steps=20)],
    "held-out losses": [MirrorDescent(eg, update_every=5, warmup_steps=20, held_out=held_out)],
    "held-out excess": [MirrorDescent(eg, update_every=5, warmup_steps=20, held_out=held_out,
                                      reference_losses=floors)],
}
traces = {}
print(f"\n{'signal':16s}" + "".join(f"{name:>9s}" for name in four) + "   (held-out loss; final weights below)")
for label, callbacks in signals.items():
    model, traces[label] = train(callbacks)
    logs = model.evaluate(*held_out, batch_size=512, return_dict=True, verbose=0)
    print(f"{label:16s}" + "".join(f"{logs[f'loss/{name}']:9.4f}" for name in four))
    print(f"{'':16s}" + "".join(f"{w:9.3f}" for w in traces[label][-1]))

"""
The figure a user would look at: each task's weight over training, for
each signal.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, len(traces), figsize=(4 * len(traces), 3), sharey=True)
for ax, (label, trace) in zip(axes, traces.items()):
    for k, name in enumerate(four):
        ax.plot(trace[:, k], label=name)
    ax.set_title(f"EG on {label}")
    ax.set_xlabel("training step")
axes[0].set_ylabel("task weight")
axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
fig.savefig("signal_weights.png", dpi=100)
print("saved signal_weights.png")

"""
On training and held-out losses the noisy task, whose loss no model can
bring below 1, takes most of the weight and the others pay; on the excess
over its floor it takes little, and the weight goes to the wiggly task, the
one the model can still learn: its held-out loss is the lowest of the three
runs, at a cost on the easy tasks. The library's own measurements of these signals, and of
what they buy downstream, are in `benchmarks/RESULTS.md`.

## Saving and resuming

The task weights and the rule's state (running loss estimates, counts, step)
are non-trainable variables of the model: `model.save` keeps them,
`keras.models.load_model` restores them, and
`keras.callbacks.BackupAndRestore` carries them through an interrupted run.
"""

import os
import tempfile

path = os.path.join(tempfile.mkdtemp(), "robust.keras")
robust = results["robust"][0]
robust.save(path)
restored = keras.models.load_model(path)
print("weights restored:", np.allclose(restored.task_weights.numpy(), robust.task_weights.numpy()))

"""
## Other ways to define tasks

- **Per element**: give `x["task_id"]` the shape of the per-element loss, e.g.
  `[batch, masked_tokens]` for a masked language model, where each masked token
  belongs to a part-of-speech group. Positions to ignore get sample weight 0.
- **Per output**: `MinimaxModel(model, task_names=[...output names...],
  task_key=None)` makes each output of a multi-output model (one loss each) a
  task.

Rules: `Uniform`, `ExponentiatedGradient` (with `adjustment` / `task_sizes`
for Group DRO's generalisation adjustment, `average` for a running mean of
the losses and `smoothing` to mix towards uniform weights),
`Softmax(temperature)`, `HardMax`, `LearningProgress` (towards the tasks
whose loss is still falling) and `Lookahead` (Lookahead-DRO, see its guide). `MirrorDescent` also takes
`update_every` and `warmup_steps`; step sizes accept a
`keras.optimizers.schedules` schedule.
"""
