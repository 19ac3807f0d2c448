"""
Title: Distributed task-robust pre-training
Author: keras-taskrobust developers
Date created: 2026/11/22
Last modified: 2026/11/22
Description: Train a MinimaxModel data-parallel with keras.distribution (JAX), tf.distribute (TensorFlow) or torch DDP.
"""

"""
## Why the global batch matters

Data-parallel training splits each global batch into shards, one per device
(a *replica*), and combines the replicas' gradients. The task weights of a
`MinimaxModel` come from the group losses `L_k` -- the mean loss of task
`k`'s elements in the batch -- and those must be the group losses of the
*global* batch: a task may be absent from one shard and present in another,
and a replica that saw three examples of a task must not weigh it like one
that saw three hundred. If each replica computed its own weights, the
replicas would disagree and the training would follow no well-defined
objective.

`MinimaxModel` therefore reduces the per-task loss *sums* and *counts* over
the replicas before it forms group means, updates the weights or logs
anything. Every replica then computes the same weights, and training follows
the single-device trajectory on the same global batches, step for step.
How that happens depends on the engine:

| engine | backend | what `MinimaxModel` does |
|---|---|---|
| `keras.distribution` (`DataParallel`, `ModelParallel`) | JAX | nothing: the step is jitted over globally sharded arrays, and XLA inserts the cross-device sums |
| `tf.distribute` (`MirroredStrategy`, `MultiWorkerMirroredStrategy`) | TensorFlow | the step runs per replica: one all-reduce of the `2K + 1` sums, counts and invalid-id count; each replica's loss is its share of the global objective, so Keras' sum of the gradients is the single-device gradient |
| `torch.nn.parallel.DistributedDataParallel`, in a custom loop | torch | the same all-reduce when DDP runs the forward pass; the loss is scaled for DDP's average of the gradients |

`Lookahead` needs the task gradients of the global batch too: each replica
differentiates its share and the `K x P` Jacobians are summed (on JAX, XLA
does it). That is one extra all-reduce of `K` gradients a step; with
`Lookahead(representation=...)` the vectors are short.

This guide runs on one CPU machine by *simulating* devices: JAX splits the
host into 4 CPU devices, TensorFlow into 4 logical CPU devices. Both must be
set before the backend starts, so they come first.
"""

import os

# JAX: 4 CPU devices. Harmless for the other backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib

import numpy as np

import keras
from keras_taskrobust import MinimaxModel
from keras_taskrobust import rules
from keras_taskrobust.callbacks import MirrorDescent
from keras_taskrobust.data import synthetic_tasks

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    # TensorFlow: 4 logical CPU devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)

"""
## A problem whose tasks are spread unevenly over the shards

Three binary tasks share one network. Each global batch of 64 examples is
sorted by task, so with 4 replicas of 16 examples most shards hold a single
task: exactly the case where per-replica group losses would go wrong.
"""

K, BATCH = 3, 64
names = ["task_0", "task_1", "task_2"]
(x, y), _ = synthetic_tasks(num_tasks=K, examples_per_task=128, num_features=8, test_examples_per_task=1, seed=0)
order = np.concatenate(
    [start + np.argsort(x["task_id"][start : start + BATCH], kind="stable") for start in range(0, len(y), BATCH)]
)
x, y = {key: value[order] for key, value in x.items()}, y[order]
print("tasks in the 4 shards of the first batch:",
      [sorted(set(x["task_id"][i : i + 16].tolist())) for i in range(0, BATCH, 16)])


class RecordWeights(keras.callbacks.Callback):
    """The task weights after every step (read through `self.model`)."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(keras.ops.convert_to_numpy(self.model.task_weights.value).copy())


def network():
    features = keras.Input((8,), name="features")
    task = keras.Input((K,), name="task")
    h = keras.layers.Concatenate()([features, task])
    h = keras.layers.Dense(16, activation="relu", name="trunk")(h)
    logits = keras.layers.Dense(1, name="head")(h)
    net = keras.Model({"features": features, "task": task}, logits)
    # The same starting point for every run.
    rng = np.random.default_rng(0)
    net.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in net.weights])
    return net


def train(scope):
    """Builds, compiles and fits a MinimaxModel under `scope()`."""
    with scope():
        model = MinimaxModel(network(), task_names=names)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.BinaryCrossentropy(from_logits=True))
        record = RecordWeights()
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                  callbacks=[MirrorDescent(rules.ExponentiatedGradient(step_size=1.0)), record])
    return np.array(record.weights), [keras.ops.convert_to_numpy(v) for v in model.model.weights]


def report(label, run, reference=None):
    weights, params = run
    line = f"{label}: final weights {np.round(weights[-1], 4)}"
    if reference is not None:
        line += (f"; largest difference from one device over {len(weights)} steps: "
                 f"weights {np.abs(weights - reference[0]).max():.1e}, "
                 f"parameters {max(np.abs(a - b).max() for a, b in zip(params, reference[1])):.1e}")
    print(line)


"""
The reference: the same fit on one device.
"""

single = train(contextlib.nullcontext)
report("one device", single)

"""
## JAX: `keras.distribution`

`DataParallel` replicates the variables over the devices and shards each
batch along its first axis. Create the model under `distribution.scope()`
(or `keras.distribution.set_distribution(distribution)` for the whole
program), then `fit` as usual. The global batch (64) must divide by the
number of devices.

`ModelParallel` also splits variables over a `"model"` axis of a device
mesh, as a `LayoutMap` says; here the 2 x 2 mesh splits the trunk's units
over 2 devices and the batch over the other 2. The task weights stay
replicated on every device.
"""

if BACKEND == "jax":
    devices = keras.distribution.list_devices()
    print("devices:", devices)
    report("DataParallel, 4 devices", train(keras.distribution.DataParallel(devices=devices).scope), single)

    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], devices=devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*trunk/kernel"] = (None, "model")
    layout_map[".*trunk/bias"] = ("model",)
    layout_map[".*head/kernel"] = ("model", None)
    model_parallel = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    report("ModelParallel, 2 x 2 mesh", train(model_parallel.scope), single)

"""
On several hosts, call `keras.distribution.initialize()` (it wraps
`jax.distributed.initialize`; on a managed cluster such as Cloud TPU it
finds the coordinator itself, elsewhere pass `job_addresses`, `num_processes`
and `process_id`) at the start of the same program on every host. Give
`fit` a `tf.data` dataset batched with the *global* batch size: the
distribution (`auto_shard_dataset=True`, the default) hands each host its
part of every batch, and Keras assembles the global array with
`jax.make_array_from_process_local_data`. (NumPy arrays are not sharded:
each host would pass its own examples, and `batch_size` would be per host.)
`MinimaxModel` needs nothing more: the step still sees the global batch.

`keras.distribution` distributes nothing on the TensorFlow backend (nor on
torch, where `DataParallel()` cannot even list devices). Rather than train
on one device in silence, `MinimaxModel.fit` raises an error if a
distribution is set on a backend other than JAX.

## TensorFlow: `tf.distribute`

Create and compile the model under `strategy.scope()`; `fit` splits every
global batch over the replicas. Two traps, both taken care of by
`MinimaxModel`:

- Keras' TensorFlow trainer builds a model from its first batch *averaged
  over the replicas*, which fails on `bool` inputs (keras-hub's
  `padding_mask`) and turns integer task ids into floats. `MinimaxModel`
  builds from the first replica's shard instead. (A plain Keras model under
  `MirroredStrategy` still needs its bool inputs cast to int32.)
- Under `MultiWorkerMirroredStrategy`, Keras 3.15's own `fit` fails twice:
  in that same build (it cannot average a batch spread over workers) and
  when it reduces the scalar logs of a step (tensorflow/tensorflow#72388).
  `MinimaxModel` builds from the first shard and shapes its step logs so
  that the reduction works.
"""

if BACKEND == "tensorflow":
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)])
    print("replicas:", strategy.num_replicas_in_sync)
    report("MirroredStrategy, 4 replicas", train(strategy.scope), single)

"""
On several machines, use `tf.distribute.MultiWorkerMirroredStrategy()` and
run the same script on every worker, each with its own `TF_CONFIG`
environment variable, for example on the first of two workers:

```python
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": ["host0:12345", "host1:12345"]},
    "task": {"type": "worker", "index": 0},   # 1 on the second worker
})
strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
with strategy.scope():
    model = MinimaxModel(...)
    model.compile(...)
model.fit(dataset, ...)  # `batch_size` / the dataset's batch is the global batch
```

`TF_CONFIG` must be set before TensorFlow starts. Every worker holds the
same task weights after every step; save from worker 0 only (or to distinct
paths). The test suite runs two such workers on localhost
(`tests/test_distributed.py`).

## PyTorch: one process, or a DDP loop

Keras' torch trainer runs in one process: `fit` trains on one device (one
GPU, or the CPU), and that is what the torch backend supports with `fit`.
For several GPUs, write a short loop around
`torch.nn.parallel.DistributedDataParallel`, one process per GPU (Keras'
guide "Multi-GPU distributed training with PyTorch" shows the pattern).
When DDP runs the forward pass, `MinimaxModel.compute_loss` sums the group
statistics over the processes and scales its loss for DDP's average of the
gradients; a forward pass not run by DDP (an `evaluate` on one process, say)
stays local. Attach the weight rule with the `MirrorDescent` callback as
`fit` would, and call its epoch and batch hooks from the loop: with
`held_out=...` they measure the held-out losses when due, on every process
alike (the same weights, the same held-out set), so every process sets the
same task weights.

The loop below runs here as one process (a process group of size 1), which
is enough to show the code; launched with `torchrun --nproc_per_node=N`
(NCCL on GPUs, a `DistributedSampler` or a slice per rank for the data), the
same loop trains on N GPUs. The test suite runs it with two processes and
checks it against one.
"""

if BACKEND == "torch":
    import torch

    os.environ.setdefault("MASTER_ADDR", "localhost")
    os.environ.setdefault("MASTER_PORT", "29512")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()

    model = MinimaxModel(network(), task_names=names)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    descent = MirrorDescent(rules.ExponentiatedGradient(step_size=1.0))
    descent.set_model(model)
    descent.on_train_begin()  # attaches the rule, as `fit` does
    ddp = torch.nn.parallel.DistributedDataParallel(model)

    weights = []
    shard = BATCH // world
    for epoch in range(2):
        descent.on_epoch_begin(epoch)
        for batch, start in enumerate(range(rank * shard, len(y), BATCH)):  # this process's shard of each batch
            part = slice(start, start + shard)
            xb, yb = {key: value[part] for key, value in x.items()}, y[part]
            y_pred = ddp(xb, training=True)
            model.zero_grad()
            loss = model.compute_loss(xb, yb, y_pred, training=True)
            loss.backward()  # DDP averages the gradients over the processes
            with torch.no_grad():
                model.optimizer.apply([v.value.grad for v in model.trainable_variables],
                                      model.trainable_variables)
            descent.on_train_batch_end(batch)
            weights.append(keras.ops.convert_to_numpy(model.task_weights.value).copy())
    torch.distributed.destroy_process_group()
    report("DDP loop, 1 process", (np.array(weights), [keras.ops.convert_to_numpy(v) for v in model.model.weights]),
           single)

"""
## What to check on a real cluster

- The batch you give `fit` is the *global* batch (on multi-host JAX, the
  per-host one); the per-replica batch is that divided by the replicas. Keep
  it large enough that most tasks appear in most batches, or smooth the loss
  estimates (`average=` on any rule).
- Build the model inside the scope (`distribution.scope()`,
  `strategy.scope()`): variables made outside it are not distributed.
- `task_weights` is an ordinary non-trainable variable: `model.save` and
  `BackupAndRestore` work as on one device (on several workers, write from
  one).
- The tiny keras-hub `BertMaskedLM` of the test suite trains with per-token
  task groups under both `keras.distribution` and `MirroredStrategy` and
  follows its single-device run (`tests/test_distributed.py`).
"""
