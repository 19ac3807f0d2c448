"""
Title: Lookahead-DRO: robust weights that do not chase noise
Author: keras-taskrobust developers
Date created: 2026/11/22
Last modified: 2026/11/22
Description: Why plain DRO piles weight onto a task that cannot improve, and how Lookahead avoids it.
"""

"""
## The failure

Plain distributionally robust optimisation (Group DRO's exponentiated
gradient) raises the weight of whichever task has the largest loss. In
multitask training one task often has an *irreducible* loss: noisy labels,
ambiguous inputs. Its loss stays the largest forever, so DRO moves all the
weight onto it, and every other task stops learning.

Lookahead-DRO (Michel, Ruder and Yogatama, 2021) asks a different question:
which weights make the *worst task loss after the next step* smallest? To
first order, a step `theta' = theta - lr * sum_j w_j g_j` changes task k's
loss to

    L'_k(w) = L_k - lr * (G w)_k,     G_kj = g_k . g_j,

where `G` is the Gram matrix of the task gradients. Lookahead picks

    w = argmin_{w in simplex}  smax_t(L'(w)) - entropy * H(w),

a smoothed max minus an entropy bonus. A task whose loss no step can
reduce has (nearly) zero gradient signal: `G`'s row and column for it are
close to zero, so weight on it buys nothing, and the entropy bonus keeps
the weights spread over the tasks that can still learn. `G` is estimated
from two halves of each batch (`g_k` from one half times `g_j` from the
other), so a task's gradient *noise* is not mistaken for progress.

## The data

Four binary tasks share one network; the last has coin-flip labels.
"""

import numpy as np

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.data import synthetic_tasks

K, NOISY = 4, 3
(x, y), (x_test, y_test) = synthetic_tasks(
    num_tasks=K, examples_per_task=1000, noisy_tasks=[NOISY], num_features=6, seed=0
)
names = ["task_0", "task_1", "task_2", "noisy"]


def network():
    features = keras.Input((6,), name="features")
    task = keras.Input((K,), name="task")
    h = keras.layers.Concatenate()([features, task])
    h = keras.layers.Dense(32, activation="relu", name="trunk1")(h)
    h = keras.layers.Dense(32, activation="relu", name="trunk2")(h)
    return keras.Model([features, task], keras.layers.Dense(2, name="head")(h))


"""
## Four trainings, one budget

The average loss (ERM), exponentiated gradient (Group DRO), Lookahead with
`G` computed on the shared representation, the output of `trunk2` (cheap:
only the head is differentiated per task), and exponentiated gradient on
the *excess* loss (DoReMi): the rule sees `max(L_k - ref_k, 0)`. Here the
reference is what each task cannot go below, known for this data: 0 for
the learnable tasks and `log 2`, the cross-entropy of a fair coin, for the
noisy one. (Without such knowledge, `MirrorDescent(reference=model,
held_out=data)` takes the excess over a reference model's loss, element by
element, on held-out data.)
"""

eg = rules.ExponentiatedGradient(step_size=0.05)
runs = {
    "ERM": None,
    "ExponentiatedGradient": MirrorDescent(eg),
    "Lookahead": MirrorDescent(rules.Lookahead(representation="trunk2")),
    "EG on the excess": MirrorDescent(eg, reference_losses=[0.0, 0.0, 0.0, float(np.log(2))]),
}
histories, accuracy = {}, {}
for label, descent in runs.items():
    keras.utils.set_random_seed(0)
    model = MinimaxModel(network(), task_names=names)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    histories[label] = model.fit(
        x, y, batch_size=128, epochs=12, verbose=0,
        callbacks=[descent] if descent else [],
    ).history
    predicted = keras.ops.convert_to_numpy(model.predict(x_test, verbose=0)).argmax(-1)
    accuracy[label] = [(predicted == y_test)[x_test["task_id"] == t].mean() for t in range(K)]

print(f"{'held-out accuracy':24s}" + "".join(f"{n:>9s}" for n in names) + "  learnable mean")
for label, acc in accuracy.items():
    print(f"{label:24s}" + "".join(f"{a:9.3f}" for a in acc) + f"  {np.mean(acc[:NOISY]):.3f}")

"""
## The weights over training

`History` holds `weight/<task>` for every epoch.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
for ax, label in zip(axes, ["ExponentiatedGradient", "Lookahead", "EG on the excess"]):
    for name in names:
        ax.plot(histories[label][f"weight/{name}"], label=name, lw=2 if name == "noisy" else 1)
    ax.set_title(label)
    ax.set_xlabel("epoch")
axes[0].set_ylabel("task weight")
axes[-1].legend()
fig.tight_layout()
fig.savefig("lookahead_weights.png", dpi=100)
print("saved lookahead_weights.png")

"""
Exponentiated gradient ends with nearly all the weight on the noisy task,
and the learnable tasks pay for it. Lookahead keeps the weights spread,
and the learnable tasks train as well as under the average loss. On the
excess loss, the noisy task's loss sits at its floor, so it draws no
weight: the rule moves the weight among the tasks that can still learn.

## Options

`Lookahead(learning_rate, entropy, temperature, inner_steps,
inner_step_size, layers, representation, split_batch)`: by default `G` is
computed on all trainable weights (exact, but one backward pass per task and
half-batch); `layers=[...]` restricts it to some layers' weights and
`representation="name"` uses a layer's output instead (the cheapest: with
one task id per example, a single backward pass through the layers above it,
once `fit` has checked that they keep the examples apart);
`entropy` trades robustness (small) against staying close to the average
loss (large). See `benchmarks/RESULTS.md` for the failure-case benchmark
over several seeds and the step-time cost.
"""
