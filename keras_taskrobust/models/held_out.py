"""Task weights from held-out losses: measured outside the training step.

Training losses of small tasks go to zero as the model memorises them, and
a rule that follows them stops meaning anything (Sagawa et al., 2020).
The losses of each task on a small held-out set do not: `MirrorDescent(...,
held_out=data)` measures them every few steps, in inference mode and
without touching the training gradients, and runs the rule on them.
"""

import keras
import numpy as np
from keras import ops

from keras_taskrobust import backend
from keras_taskrobust.models import task_inputs
from keras_taskrobust.rules.weighting_rule import keep_unseen_weights


def batches(data, batch_size=256):
    """`(x, y, sample_weight)` batches of `data`, as the held-out signal takes it.

    `data` is a tuple `(x, y)` or `(x, y, sample_weight)` of arrays (`x` a
    dict holding the task ids, as in training), cut into batches of
    `batch_size` (`None`: one batch), or a `tf.data.Dataset` of such
    batches. A dataset is read once per measurement, so it must be finite
    (no `repeat()`).
    """
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 3):
            raise ValueError(
                "Held-out data must be (x, y) or (x, y, sample_weight), or a batched "
                f"tf.data.Dataset of those; got a sequence of {len(data)} items."
            )
        x, y, sample_weight = (*data, None) if len(data) == 2 else data
        size = len(keras.tree.flatten(y)[0])
        batch_size = batch_size or max(size, 1)
        for start in range(0, size, batch_size):
            part = lambda t: keras.tree.map_structure(lambda a: a[start : start + batch_size], t)
            yield part(x), part(y), None if sample_weight is None else part(sample_weight)
        return
    if not hasattr(data, "as_numpy_iterator"):
        raise TypeError(
            "Held-out data must be a tuple of arrays (x, y[, sample_weight]) or a batched "
            f"tf.data.Dataset; got {type(data).__name__}."
        )
    for batch in data.as_numpy_iterator():
        batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
        if len(batch) not in (2, 3):
            raise ValueError("A held-out dataset must yield (x, y) or (x, y, sample_weight) batches.")
        yield (*batch, None) if len(batch) == 2 else batch


def task_losses(minimax, data, reference=None, reference_losses=None):
    """Each task's mean loss on `data`, and which tasks it holds.

    The model runs in inference mode; nothing is differentiated and no state
    changes. With `reference` (a Keras model) or `reference_losses` (K
    floats), the loss is the *excess* over the reference, clipped at 0
    (DoReMi, Xie et al. 2023): per element over the reference model's loss
    on the same example, or per task over the fixed reference loss.

    Returns:
        `(losses, present)`: NumPy `[K]` float and bool arrays.
    """
    k = minimax.num_tasks
    if reference is not None and minimax.task_key is None:
        raise ValueError(
            "A reference model needs task ids in x (per example or per element); "
            "with one task per output, give fixed `reference_losses` instead."
        )
    totals = np.zeros((k + 1, 3))
    for x, y, sample_weight in batches(data):
        y_pred = _predict(minimax, x)
        split = minimax
        if reference is not None:
            ref_pred = _predict(reference, task_inputs.model_inputs(x, minimax.task_key))
            split = task_inputs.ExcessLoss(minimax, ref_pred)
        totals += ops.convert_to_numpy(task_inputs.grouped_loss(split, x, y, y_pred, sample_weight).totals())
    if totals[k, 2]:
        raise ValueError(
            f"{int(totals[k, 2])} task ids in the held-out data are outside [0, {k}) "
            f"for MinimaxModel with tasks {minimax.task_names}."
        )
    counts = totals[:k, 1]
    present = counts > 0
    losses = np.where(present, totals[:k, 0] / np.maximum(counts, 1e-12), 0.0)
    if reference_losses is not None:
        losses = np.maximum(losses - np.asarray(reference_losses, "float64"), 0.0)
    return losses, present


def task_gram(minimax, data, rule):
    """`G` `[K, K]` of the task-loss gradients on `data`, for `rule`'s settings (`Lookahead`).

    Computed as in the training step (`TaskGram`), with the model in
    inference mode, on the whole held-out set as one batch: the gradients
    of tasks held in different batches must meet in one product. No state
    changes. JAX compiles it once per rule and model (its arguments are the
    weights' values): run eagerly, op by op, it took most of a pre-training's
    time (benchmarks/RESULTS.md, "Lookahead" under "POS-grouped masked LM").
    """
    parts = list(batches(data, batch_size=None))
    joined = lambda *a: ops.convert_to_tensor(np.concatenate(a))  # one batch, in each part's structure
    x, y = keras.tree.map_structure(joined, *[p[:2] for p in parts])
    sample_weight = None if parts[0][2] is None else keras.tree.map_structure(joined, *[p[2] for p in parts])
    if keras.backend.backend() == "jax":
        return ops.convert_to_numpy(_compiled_gram(minimax, rule)(x, y, sample_weight))
    return ops.convert_to_numpy(_gram(minimax, rule, x, y, sample_weight))


def _gram(minimax, rule, x, y, sample_weight):
    inputs = task_inputs.model_inputs(x, minimax.task_key)
    if rule.representation is not None:
        y_pred = minimax.task_gram.forward(inputs, rule.representation, training=False)
    else:
        y_pred = minimax.model(inputs, training=False)
    return minimax.task_gram(x, y, y_pred, sample_weight, rule)


def _compiled_gram(minimax, rule):
    """`_gram` for `rule` as one compiled function of the data, the weights read as they are now."""
    functions = minimax.task_gram.held_out_functions
    if rule not in functions:
        variables = minimax.model.variables

        def gram(values, x, y, sample_weight):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return _gram(minimax, rule, x, y, sample_weight)

        run = backend.compiled(gram)
        functions[rule] = lambda *data: run([v.value for v in variables], *data)
    return functions[rule]


def _predict(model, x):
    """`model(x)` in inference mode, compiled where that pays.

    Keras' compiled prediction step (traced once, reused every measurement)
    costs an eager JAX call a fraction of its time (benchmarks/RESULTS.md,
    "What the held-out signal costs"); under tf.distribute it would split
    the batch over the replicas, so TensorFlow calls the model directly.
    """
    if keras.backend.backend() == "tensorflow":
        return model(x, training=False)
    return model.predict_on_batch(x)


def update_weights(minimax, descent, losses, present, updates, gram=None):
    """Runs `descent.rule` on held-out `losses` and writes the model's task state.

    Args:
        minimax: the `MinimaxModel` (reached through the callback's
            `self.model`, so that JAX's training state is synced).
        descent: the `MirrorDescent` whose rule runs.
        losses, present: from `task_losses`.
        updates: the number of held-out updates made before this one.
        gram: from `task_gram`, for rules that need it.

    Returns:
        The new weights, NumPy `[K]`.
    """
    losses = ops.convert_to_tensor(np.asarray(losses, "float32"))
    present = ops.convert_to_tensor(present)
    seen = ops.logical_and(present, updates > 0)  # the held-out set is fixed
    previous = minimax.held_out_losses.value
    estimates = descent.rule.estimate(previous, losses, present, seen)
    first = ops.logical_and(present, ops.logical_not(seen))
    extra = descent.rule.update_inputs(previous, estimates, first, gram)
    weights = minimax.task_weights.value
    proposed = descent.rule.update(weights, estimates, ops.convert_to_tensor(updates), **extra)
    weights = keep_unseen_weights(weights, proposed, present)
    minimax.held_out_losses.assign(estimates)
    minimax.task_weights.assign(weights)
    return ops.convert_to_numpy(weights)
