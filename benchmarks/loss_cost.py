"""Cost of MinimaxModel's loss against Keras' own, per call, outside `fit`.

What `overhead.py` measures inside `fit`, taken apart: the MLP workload of
`overhead.py` (batch 256, predictions of the 10-class softmax), and the loss
of each model *with its gradient with respect to the predictions*, the part
of a training step that differs between them besides the call of the
wrapper:

- `plain`: `keras.Model.compute_loss` of the net (sparse categorical
  crossentropy, Keras' own reduction);
- `minimax`: `MinimaxModel.compute_loss` in training, with
  `MirrorDescent(ExponentiatedGradient())` attached: the grouping by task
  id, the weight rule, the writes of the task state and the task logs.

Each runs in the form a training step runs it: jitted on JAX
(`stateless_compute_loss` under `jax.value_and_grad`), in a `tf.function` on
TensorFlow (under a `GradientTape`), eagerly on torch (`backward()`). The two
alternate for `--rounds` rounds of `--calls` calls each; reported are the
median microseconds per call, the median over rounds of each round's
difference (with their range), and the number of operations the backend runs
per call: jaxpr equations of the value and gradient on JAX, graph
operations on TensorFlow (without constants, placeholders and identities),
ATen operators dispatched on torch (forward and backward).

Usage:

    python benchmarks/loss_cost.py --all            # 3 backends, markdown table
    python benchmarks/loss_cost.py --backend torch  # one backend, JSON lines
"""

import collections
import statistics
import time

import numpy as np

import per_backend
from overhead import TASK_COUNTS
from overhead import mlp_workload


def loss_and_gradient(model, x, y, y_pred):
    """`(call, count_ops)`: one call of the loss and its gradient; its op count."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        state = [[v.value for v in vs] for vs in (model.trainable_variables, model.non_trainable_variables,
                                                   model.metrics_variables)]

        def value(y_pred, state):
            return model.stateless_compute_loss(*state, x=x, y=y, y_pred=y_pred, training=True)

        grad = jax.value_and_grad(value, has_aux=True)
        jitted = jax.jit(grad)

        def call():
            (_, (_, state[1], state[2])), gradient = jitted(y_pred, state)
            return gradient

        count = lambda: len(jax.make_jaxpr(grad)(y_pred, state).eqns)
        return (lambda: jax.block_until_ready(call())), count
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                loss = model.compute_loss(x, y, y_pred, training=True)
            return tape.gradient(loss, y_pred)

        skip = {"Const", "Placeholder", "Identity", "NoOp"}
        graph = lambda: step.get_concrete_function(y_pred).graph
        count = lambda: sum(op.type not in skip for op in graph().get_operations())
        return (lambda: step(y_pred).numpy()), count
    from torch.utils._python_dispatch import TorchDispatchMode

    leaf = y_pred.detach().requires_grad_(True)

    def backward():
        model.compute_loss(x, y, leaf, training=True).backward()
        leaf.grad = None

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            return func(*args, **(kwargs or {}))

    def count():
        Count.ops = 0
        with Count():
            backward()
        return Count.ops

    return backward, count


def measure(num_tasks, rounds, calls):
    import keras
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust.callbacks import MirrorDescent
    from keras_taskrobust.rules import ExponentiatedGradient

    make_net, loss, batch_size, _, minimax_data = mlp_workload(num_tasks, np.random.default_rng(0))
    batch = lambda tree: keras.tree.map_structure(lambda a: keras.ops.convert_to_tensor(a[:batch_size]), tree)
    x, y = batch(minimax_data["x"]), batch(minimax_data["y"])
    plain = make_net()
    minimax = MinimaxModel(make_net(), num_tasks=num_tasks)
    for model in (plain, minimax):
        model.compile(optimizer="adam", loss=loss)
    minimax.use_weighting(MirrorDescent(ExponentiatedGradient()))  # as `fit` does
    y_pred = plain(x["features"])
    calls_of = {
        "plain": loss_and_gradient(plain, x["features"], y, y_pred),
        "minimax": loss_and_gradient(minimax, x, y, y_pred),
    }
    times = collections.defaultdict(list)
    for round_ in range(1 + rounds):  # round 0 compiles
        for name, (call, _) in calls_of.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            if round_:
                times[name].append((time.perf_counter() - start) / calls)
    us = {name: 1e6 * statistics.median(t) for name, t in times.items()}
    differences = [1e6 * (m - p) for m, p in zip(times["minimax"], times["plain"])]
    return {
        "backend": keras.backend.backend(), "K": num_tasks, "plain_us": us["plain"], "minimax_us": us["minimax"],
        "difference_us": statistics.median(differences), "round_differences_us": differences,
        "plain_ops": calls_of["plain"][1](), "minimax_ops": calls_of["minimax"][1](),
    }


def measure_backend(rounds, calls):
    """Yields a result row per K, for the backend of this process."""
    for num_tasks in TASK_COUNTS:
        yield measure(num_tasks, rounds, calls)


def markdown_table(rows):
    lines = [
        "| backend | K | plain us/call | minimax us/call | difference (us) | per-round differences (min-max) "
        "| plain ops | minimax ops |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['K']} | {r['plain_us']:.0f} | {r['minimax_us']:.0f} "
            f"| {r['difference_us']:.0f} | {min(r['round_differences_us']):.0f}-{max(r['round_differences_us']):.0f} "
            f"| {r['plain_ops']} | {r['minimax_ops']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    per_backend.main(
        __file__, __doc__.splitlines()[0],
        {"rounds": (15, "plain/minimax alternations"), "calls": (300, "calls per round")},
        measure_backend, markdown_table,
    )
