"""
Title: Measuring worst-case downstream transfer with DownstreamSuite
Author: keras-taskrobust developers
Date created: 2026/11/23
Last modified: 2026/11/23
Description: Probe the backbone on downstream tasks during pre-training, report the worst, stop on it.
"""

"""
## Setup

Pre-training is judged by how well the backbone transfers to the tasks that
come after it -- and task-robust pre-training by how well it transfers to the
*worst* of them. `DownstreamSuite` is a callback that measures this during
`fit`: at the end of an epoch it adapts the current backbone to each
downstream task (a linear probe on frozen features, or a fine-tuned copy),
evaluates it, and puts `downstream/<task>`, `downstream/worst` and
`downstream/mean` in the epoch's logs.

Everything here runs on JAX, TensorFlow or PyTorch and downloads nothing.
"""

import numpy as np

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import DownstreamSuite
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.downstream import DownstreamTask

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)

"""
## A pre-training problem with a loud and a quiet task

Three upstream regression tasks share a backbone with only two units. Each
task reads one input direction, at its own loudness: the "loud" target is 4
times the scale of the "quiet" one. Two units cannot keep three directions,
and the average loss is cheapest to lower by keeping the loud two.

Each task has its own output, so each output is a task (`task_key=None`).
The backbone is the layer named `"backbone"`.
"""

loudness = {"loud": 2.0, "medium": 1.0, "quiet": 0.5}


def inputs(n):
    return rng.normal(size=(n, 8)).astype("float32")


x = inputs(2048)
targets = {name: scale * x[:, k : k + 1] for k, (name, scale) in enumerate(loudness.items())}


def pretraining_model():
    features = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(2, name="backbone")(features)
    outputs = {name: keras.layers.Dense(1, name=name)(hidden) for name in loudness}
    model = MinimaxModel(keras.Model(features, outputs), task_names=list(loudness), task_key=None)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


"""
## Downstream tasks

Downstream, we want to classify the sign of each of the three directions from
fresh inputs. A `DownstreamTask` holds its training and evaluation data, a
head (`num_classes=2`: softmax regression on the features) and a metric
(accuracy by default). Data may be NumPy arrays as here, a `tf.data.Dataset`,
or a TFDS split (`tfds.load(name, split=...)`, labels under `"label"`).

The default mode is `"linear_probe"`: the features are extracted once per
evaluation and only the head is trained -- the quick measure of what the
features hold. `"finetune"` trains a copy of the backbone with the head for
a few epochs: slower, and it can learn what the features lack.
"""


def sign_task(k, name, **kwargs):
    def split(n):
        xs = inputs(n)
        return xs, (xs[:, k] > 0).astype("int32")

    return DownstreamTask(name, split(512), split(512), num_classes=2, **kwargs)


probes = [sign_task(k, f"sign_{name}") for k, name in enumerate(loudness)]
finetuned = sign_task(2, "sign_quiet_finetuned", mode="finetune", epochs=2,
                      optimizer=keras.optimizers.Adam(0.05))

"""
## The suite in `fit`

Give the suite the backbone (by name: it is searched through the nested
models, here inside the `MinimaxModel`) and the tasks. It prints a table
after every evaluation and can write every evaluation to a CSV or JSON file.

Callbacks that read the `downstream/` keys must come *after* the suite in
the list. `EarlyStopping` on `downstream/worst` with `mode="max"` stops
pre-training when the worst downstream task stops improving. The worst is
always "higher is better": a task whose metric is an error counts with its
negative.
"""

suite = DownstreamSuite("backbone", probes + [finetuned], log_file="downstream.csv")
stop = keras.callbacks.EarlyStopping(monitor="downstream/worst", mode="max", patience=2)
model = pretraining_model()
history = model.fit(x, targets, batch_size=64, epochs=4, verbose=0, callbacks=[suite, stop])

"""
The fine-tuned copy learns the quiet direction that the frozen features
lack; the linear probe shows that the backbone itself has lost it. The keys
are in `History` (and so in `CSVLogger` and `TensorBoard`):
"""

print({key: [round(v, 3) for v in values] for key, values in history.history.items()
       if key.startswith("downstream/")})

"""
Every evaluation is also kept in `suite.results`, with the name of the worst
task, and written to `downstream.csv`:
"""

print([(r["epoch"], r["worst_task"], round(r["downstream/worst"], 3)) for r in suite.results])
print(open("downstream.csv").read().splitlines()[0])

"""
Adaptation never touches the pre-training model: its weights, its
optimizer state and its task weights are bit-for-bit the same after the suite
runs, and the global random generators are restored, so pre-training with
the suite follows the same trajectory as without it.

## Average versus worst-case pre-training

The suite's purpose is to compare pre-training recipes by their worst
downstream task. Here is the average-loss model above against one whose task
weights follow a smoothed max of the task losses (`rules.Softmax`), with the
linear probes only. Watch `downstream/worst`, and which task is worst.
"""

for label, callbacks in {
    "average": [],
    "worst-case": [MirrorDescent(rules.Softmax(temperature=0.05))],
}.items():
    keras.utils.set_random_seed(0)
    suite = DownstreamSuite("backbone", probes, every_n_epochs=2, verbose=0)
    pretraining_model().fit(x, targets, batch_size=64, epochs=8, verbose=0, callbacks=callbacks + [suite])
    print(label, [(r["worst_task"], round(r["downstream/worst"], 3)) for r in suite.results])

"""
## Other backbones and data

- keras-hub backbones: `BertBackbone` returns a dict; the suite uses its
  `"pooled_output"` unless `features="sequence_output"` asks for the
  sequence, which is mean-pooled over the real tokens (`padding_mask`).
  For `ViTBackbone`, `pooling="first"` takes the class token. Task inputs
  are the backbone's inputs (`{"token_ids", "segment_ids", "padding_mask"}`).
- Any other head: `DownstreamTask(name, train, eval, head=lambda:
  keras.layers.Dense(1), loss="mse", metric="mae")`; Keras knows that lower
  errors are better, or say so with `higher_is_better`.
- With `every_n_epochs > 1`, epochs that are not evaluated have no
  `downstream/` keys (like `validation_freq`), and the suite evaluates once
  more at the end of training if the last epoch was not evaluated.
"""
