"""What does `MinimaxModel` add to each training step, in microseconds (without `fit`)?

`overhead.py` times whole `fit` epochs; on a 1-5 ms MLP step its ratios move
by more than the task logic between runs (the data adapter, the callbacks and
a shared machine's noise). This times each backend's training step itself,
on one batch of `overhead.py`'s MLP workload held ready, for the three models
of `overhead.py`: the plain net, the plain net whose optimizer skips
non-finite steps as `MinimaxModel`'s does ("skip": Keras'
`LossScaleOptimizer` at scale 1), the wrapper floor (`Forwarding`) and
`MinimaxModel(net, num_tasks=K)` with `MirrorDescent(ExponentiatedGradient())`
attached (the callback's `on_train_begin`, as `fit` calls it); and
`MinimaxModel` without `MirrorDescent` ("no rule": the loss split into
tasks, the loss estimates and the task logs, with the weights left uniform).
The steps between them split the minimax step's cost: skip - plain is the
non-finite skip, floor - plain what any wrapper with a task-id input costs,
no rule - floor the grouping, the state and the logs (and the skip),
minimax - no rule the weight rule.

- JAX: Keras' jitted `train_function` on the batch already on the device,
  the state threaded from call to call;
- TensorFlow: Keras' `train_function` (a `tf.function`) on an iterator that
  repeats the batch;
- torch: `train_step` on the batch as torch tensors (eager, as `fit` runs it).

The five alternate for `--rounds` rounds of `--steps` steps each, each round
starting with the next model; reported: the median step time of each and the
median over rounds of each round's ratio to the plain step.

Usage:

    python benchmarks/step_overhead.py --all            # 3 backends, markdown table
    python benchmarks/step_overhead.py --backend torch  # one backend, JSON lines
    python benchmarks/step_overhead.py --backend tensorflow --jit_compile 1  # XLA
"""

import statistics
import time

import numpy as np

import harness
from overhead import TASK_COUNTS
from workloads import forwarding_model
from workloads import mlp_workload

OPTIONS = {
    "rounds": (21, "alternations of the five models"),
    "jit_compile": (0, "1: compile every model with jit_compile=True (XLA on TensorFlow)", 0),
    "steps": (100, "training steps per sample", 2),
}


def step_timer(model, data, batch_size, steps, callbacks=()):
    """`time_steps()`: runs `steps` training steps of `model` on one batch; returns seconds/step."""
    import keras

    first = lambda v: {k: a[:batch_size] for k, a in v.items()} if isinstance(v, dict) else v[:batch_size]
    batch = {name: first(value) for name, value in data.items()}
    model.fit(**batch, batch_size=batch_size, epochs=1, verbose=0)  # builds the model and optimizer
    for callback in callbacks:  # attaches the rule, as `fit` does
        callback.set_model(model)
        callback.on_train_begin()
    model.make_train_function()
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        on_device = jax.device_put((batch["x"], batch["y"]))
        state = [
            [v.value for v in variables]
            for variables in (model.trainable_variables, model.non_trainable_variables,
                              model.optimizer.variables, model.metrics_variables)
        ]

        def run():
            nonlocal state
            for _ in range(steps):
                _, state = model.train_function(state, iter([on_device]))
            jax.block_until_ready(state)
    elif backend == "tensorflow":
        import tensorflow as tf

        iterator = iter(tf.data.Dataset.from_tensors((batch["x"], batch["y"])).repeat())

        def run():
            for _ in range(steps):
                logs = model.train_function(iterator)
            keras.tree.map_structure(np.asarray, logs)
    else:
        to_torch = lambda v: keras.tree.map_structure(keras.ops.convert_to_tensor, v)
        on_device = (to_torch(batch["x"]), to_torch(batch["y"]))

        def run():
            for _ in range(steps):
                model.train_step(on_device)

    def time_steps():
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / steps

    time_steps()  # compiles
    return time_steps


def measure(num_tasks, rounds, jit_compile, steps):
    """Alternates the five models' steps; returns a result row (times in us)."""
    import keras
    from keras_taskrobust import _keras_compat
    from keras_taskrobust import MinimaxModel
    from keras_taskrobust.callbacks import MirrorDescent
    from keras_taskrobust.rules import ExponentiatedGradient

    make_net, loss, batch_size, plain_data, minimax_data = mlp_workload(num_tasks, np.random.default_rng(0))
    keras.utils.set_random_seed(0)
    plain = make_net()
    keras.utils.set_random_seed(0)
    skip = make_net()
    keras.utils.set_random_seed(0)
    floor = forwarding_model(make_net())
    keras.utils.set_random_seed(0)
    no_rule = MinimaxModel(make_net(), num_tasks=num_tasks)
    keras.utils.set_random_seed(0)
    minimax = MinimaxModel(make_net(), num_tasks=num_tasks)
    for model in (plain, skip, floor, no_rule, minimax):
        optimizer = _keras_compat.skipping_non_finite("adam") if model is skip else "adam"
        model.compile(optimizer=optimizer, loss=loss, jit_compile=bool(jit_compile) or "auto")
    timers = {
        "plain": step_timer(plain, plain_data, batch_size, steps),
        "skip": step_timer(skip, plain_data, batch_size, steps),
        "floor": step_timer(floor, minimax_data, batch_size, steps),
        "no_rule": step_timer(no_rule, minimax_data, batch_size, steps),
        "minimax": step_timer(minimax, minimax_data, batch_size, steps, [MirrorDescent(ExponentiatedGradient())]),
    }
    names = list(timers)
    times = {name: [] for name in names}
    for round_ in range(rounds):
        first = round_ % len(names)
        for name in names[first:] + names[:first]:
            times[name].append(timers[name]())
    ratios = {name: [t / p for t, p in zip(times[name], times["plain"])] for name in names[1:]}
    return {
        "backend": keras.backend.backend(), "K": num_tasks, "jit_compile": bool(jit_compile),
        **{f"{name}_us": 1e6 * statistics.median(t) for name, t in times.items()},
        "ratio": statistics.median(ratios["minimax"]), "round_ratios": ratios["minimax"],
        "skip_ratio": statistics.median(ratios["skip"]),
        "floor_ratio": statistics.median(ratios["floor"]),
        "no_rule_ratio": statistics.median(ratios["no_rule"]),
    }


def measure_backend(rounds, jit_compile, steps):
    for num_tasks in TASK_COUNTS[:1] if harness.SMOKE else TASK_COUNTS:
        yield measure(num_tasks, rounds, jit_compile, steps)


def markdown_table(rows):
    lines = [
        "| backend | K | plain us/step | floor us/step | no rule us/step | minimax us/step "
        "| minimax - plain (us) | ratio | per-round ratios (min-max) | non-finite skip | wrapper floor | no rule |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['K']} | {r['plain_us']:.0f} | {r['floor_us']:.0f} | {r['no_rule_us']:.0f} "
            f"| {r['minimax_us']:.0f} | {r['minimax_us'] - r['plain_us']:.0f} | {r['ratio']:.3f} "
            f"| {min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f} "
            f"| {r['skip_ratio']:.3f} | {r['floor_ratio']:.3f} | {r['no_rule_ratio']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    harness.main(__file__, __doc__.splitlines()[0], OPTIONS, measure_backend, markdown_table)
