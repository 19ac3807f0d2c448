"""
Title: Getting started with keras-taskrobust
Author: keras-taskrobust developers
Date created: 2026/11/22
Last modified: 2026/11/22
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
for Group DRO's generalisation adjustment and `average` for a running mean of
the losses), `Softmax(temperature)` and `HardMax`. `MirrorDescent` also takes
`update_every` and `warmup_steps`; step sizes accept a
`keras.optimizers.schedules` schedule.
"""
