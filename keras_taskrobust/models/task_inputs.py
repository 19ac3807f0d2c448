"""From a training batch to its per-element loss split into tasks.

Validation and dispatch for the three ways a task is given (an id per
example, an id per loss element, one task per output): the step's inputs,
labels and predictions become a `task_groups.GroupedLoss`, and bad input
becomes an error that names the problem and the fix.
"""

import keras
from keras import ops
from keras import tree

from keras_taskrobust.models import task_groups


def task_names(num_tasks, names):
    """The K task names from `MinimaxModel`'s `num_tasks` and `task_names` arguments."""
    if num_tasks is not None and (isinstance(num_tasks, bool) or int(num_tasks) != num_tasks or num_tasks < 1):
        raise ValueError(f"`num_tasks` must be a whole number >= 1 (K, the number of tasks); got {num_tasks!r}.")
    if names is None:
        if num_tasks is None:
            raise ValueError("MinimaxModel needs the number of tasks: pass `num_tasks=K` or `task_names=[...]`.")
        names = [f"task_{k}" for k in range(int(num_tasks))]
    names = [str(name) for name in names]
    if num_tasks is not None and num_tasks != len(names):
        raise ValueError(
            f"`num_tasks={num_tasks}` but {len(names)} `task_names` were given ({names}); pass one name per task."
        )
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"`task_names` must be distinct and non-empty; got {names}.")
    return names


def model_inputs(inputs, task_key):
    """`inputs` without the task ids; a single remaining input as a tensor."""
    if task_key is None or not isinstance(inputs, dict):
        return inputs
    inputs = {k: v for k, v in inputs.items() if k != task_key}
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    return inputs


def grouped_loss(minimax, x, y, y_pred, sample_weight, example_mask=None):
    """The per-element loss of a `MinimaxModel`'s step split into its tasks.

    Args:
        minimax: the `MinimaxModel` (its `loss`, `task_key`, `num_tasks`
            and `task_names` say how to split).
        x, y, y_pred, sample_weight: the step's batch and predictions.
        example_mask: optional `[batch]` 0/1 tensor selecting examples.

    Returns:
        A `task_groups.GroupedLoss`.
    """
    if minimax.loss is None:
        raise ValueError(
            "MinimaxModel needs a loss: call `model.compile(loss=...)` with "
            "the per-element loss to split into tasks."
        )
    if minimax.task_key is None:
        return _by_output(minimax, y, y_pred, sample_weight, example_mask)
    if isinstance(y_pred, (dict, list, tuple)):
        raise ValueError(
            "MinimaxModel with `task_key` expects a single-output model; "
            "for one task per output pass `task_key=None`."
        )
    ids = task_ids(x, minimax.task_key, minimax.num_tasks)
    losses = unreduced(minimax.loss)(masked_labels(y, sample_weight), y_pred)
    return task_groups.ByTaskId(losses, ids, sample_weight, minimax.num_tasks, example_mask)


class ExcessLoss:
    """A `MinimaxModel`'s task split, its loss replaced by the clipped excess over `ref_pred`.

    Passed to `grouped_loss` in place of the model: each element's loss
    becomes `max(loss(y, y_pred) - loss(y, ref_pred), 0)` (DoReMi's excess
    loss over a reference model's prediction of the same element).
    """

    def __init__(self, minimax, ref_pred):
        self.task_key, self.num_tasks, self.task_names = minimax.task_key, minimax.num_tasks, minimax.task_names
        per_element = unreduced(minimax.loss)
        self.loss = lambda y, y_pred: ops.maximum(per_element(y, y_pred) - per_element(y, ref_pred), 0.0)


def task_ids(x, task_key, num_tasks):
    """`x[task_key]`, checked to be integers, as int32 (or int64, see `task_groups.as_index`)."""
    if not isinstance(x, dict) or task_key not in x:
        raise missing_key_error(x, task_key)
    ids = x[task_key]
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if "int" not in dtype:
        raise TypeError(
            f"Task ids in x[{task_key!r}] must be integers in [0, {num_tasks}); "
            f"got dtype {dtype}. Cast them, e.g. `ids.astype('int32')` or "
            "`tf.cast(ids, 'int32')`."
        )
    return task_groups.as_index(ids)


def masked_labels(y, sample_weight):
    """`y` with 0 wherever the sample weight is not positive (float labels only).

    A label that the user masks out (weight 0: padding, an ignored example)
    may hold a NaN. Its loss is left out of every sum, but the loss's
    gradient there is 0 * NaN = NaN, which would reach the model's weights:
    the label is replaced before the loss is computed (the first `where` of
    a "double where"; `task_groups` selects the loss values before it weighs
    them). Labels whose shape does not start with the weights' (a per-element
    weight of a loss that is not aligned with its labels) stay as they are.
    """
    if sample_weight is None or isinstance(sample_weight, (dict, list, tuple)) or not hasattr(y, "dtype"):
        return y
    if "float" not in keras.backend.standardize_dtype(y.dtype):
        return y  # no NaN in an integer label
    if not hasattr(sample_weight, "shape"):
        sample_weight = ops.convert_to_tensor(sample_weight)
    label_shape, weight_shape = tuple(y.shape), tuple(sample_weight.shape)
    rank = len(weight_shape)
    if rank > len(label_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(weight_shape, label_shape)
    ):
        return y
    keep = sample_weight > 0
    for _ in range(len(label_shape) - rank):
        keep = ops.expand_dims(keep, -1)
    return ops.where(keep, y, 0.0)


def missing_key_error(x, task_key):
    """The error for inputs that lack the task ids."""
    got = sorted(x) if isinstance(x, dict) else type(x).__name__
    return KeyError(
        f"MinimaxModel expects the task ids in x[{task_key!r}], but x has "
        f"{'keys ' if isinstance(x, dict) else 'type '}{got}. Give x as a "
        f"dict, e.g. {{'features': features, {task_key!r}: task_ids}}, set "
        "`task_key` to the key that holds the ids, or use "
        "`task_key=None` for one task per output."
    )


def _by_output(minimax, y, y_pred, sample_weight, example_mask):
    names = minimax.task_names
    if isinstance(y_pred, dict):
        if sorted(y_pred) != sorted(names):
            raise ValueError(
                f"The model's outputs are {sorted(y_pred)} but the tasks are "
                f"{names}; with `task_key=None` each output is a task: pass "
                "`task_names` equal to the output names."
            )
        outputs = list(names)
        pick = lambda s, name, k: s[name] if isinstance(s, dict) else s[k]
    elif isinstance(y_pred, (list, tuple)):
        if len(y_pred) != minimax.num_tasks:
            raise ValueError(
                f"The model has {len(y_pred)} outputs but MinimaxModel has "
                f"{minimax.num_tasks} tasks; with `task_key=None` each output "
                "is a task: set `num_tasks` to the number of outputs."
            )
        outputs = list(range(len(y_pred)))
        pick = lambda s, name, k: s[k]
    else:
        raise ValueError(
            "MinimaxModel with `task_key=None` treats each output as a task, "
            "but the model has a single output. Give the task ids in "
            "x[task_key] instead, or use a multi-output model."
        )
    loss = minimax.loss
    losses, weights = [], []
    for k, name in enumerate(outputs):
        loss_fn = unreduced(pick(loss, name, k) if isinstance(loss, (dict, list, tuple)) else loss)
        weight = None if sample_weight is None else pick(sample_weight, name, k)
        losses.append(loss_fn(masked_labels(pick(y, name, k), weight), pick(y_pred, name, k)))
        weights.append(weight)
    return task_groups.ByOutput(losses, weights, example_mask)


def unreduced(loss):
    """A per-element version of a Keras loss (string, function or `Loss`).

    A `Loss`'s `call` is its unreduced form; `__call__` adds the dtype
    conversion done here and the reduction done per task instead.
    """
    loss = keras.losses.get(loss)
    if not isinstance(loss, keras.losses.Loss):
        return loss

    def per_element(y_true, y_pred):
        convert = lambda t: ops.convert_to_tensor(t, dtype=loss.dtype)
        return loss.call(tree.map_structure(convert, y_true), tree.map_structure(convert, y_pred))

    return per_element
