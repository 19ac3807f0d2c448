"""A per-element loss split into task groups: per-task totals and objectives."""

import keras
from keras import ops

from keras_taskrobust import backend


def as_index(ids):
    """Integer task ids in a dtype that every backend's scatter takes.

    TensorFlow's segment sum and torch's `index_add` reject small and unsigned
    integers (uint8, int8, int16, uint16): they become int32, exactly. int32
    and int64 stay as they are (a cast of int64 to int32 would wrap an id of
    2**32 into a valid one); uint32 and uint64 become int64, where an id of
    2**63 or more turns negative, out of range, not into another task (JAX
    without 64-bit types holds them as uint32 already: int32, where an id of
    2**31 or more turns negative).
    """
    if not hasattr(ids, "dtype"):
        ids = ops.convert_to_tensor(ids)
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if dtype in ("int32", "int64"):
        return ids
    return ops.cast(ids, "int64" if dtype in ("uint32", "uint64") and _has_int64() else "int32")


def _has_int64():
    if keras.backend.backend() != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def expand_to(tensor, like, what):
    """Broadcasts `tensor` (its shape a prefix of `like`'s) to `like`'s shape.

    Per-example values (shape `[batch]`) are repeated along the trailing axes
    of the per-element loss; per-element values must already have its shape.
    """
    tensor = ops.convert_to_tensor(tensor)
    shape = tuple(like.shape)
    rank, target_rank = len(tensor.shape), len(shape)
    prefix_ok = rank <= target_rank and all(
        a is None or b is None or a == b
        for a, b in zip(tensor.shape, shape[:rank])
    )
    if not prefix_ok:
        raise ValueError(
            f"{what} have shape {tuple(tensor.shape)}, which does not match the "
            f"per-element loss of shape {tuple(shape)}. Give one value per "
            "example (shape [batch]) or one per loss element (the loss's shape)."
        )
    if tuple(tensor.shape) == shape and None not in shape:
        return tensor
    for _ in range(target_rank - rank):
        tensor = ops.expand_dims(tensor, -1)
    return ops.broadcast_to(tensor, ops.shape(like))


def element_weights(losses, sample_weight, example_mask=None):
    """Per-element weights with the shape of `losses`, or `None` for all ones.

    `sample_weight` (or 1) times `example_mask`, a `[batch]` 0/1 selection of
    examples (or `None` for all of them).
    """
    if sample_weight is None and example_mask is None:
        return None
    if sample_weight is None:
        weight = ops.ones_like(losses, dtype="float32")
    else:
        weight = ops.cast(expand_to(sample_weight, losses, "Sample weights"), "float32")
    if example_mask is not None:
        weight = weight * ops.cast(expand_to(example_mask, losses, "Example mask"), "float32")
    return weight


class _Weighted:
    """A float loss tensor with its element weights (`None`: all ones).

    Elements of weight 0 are left out. A NaN weight is kept, as a NaN term
    in its task's sum counted once in its weight sum: a non-finite loss of
    that task (the step then leaves the task weights as they are and `fit`
    stops, naming the task), not an element silently dropped. Negative
    weights never reach a task: the callers route them apart.
    """

    def __init__(self, losses, weight):
        self.values = ops.cast(losses, "float32")
        self.weight = weight
        self.weighted = None if weight is None else weight != 0  # NaN != 0

    def terms(self, values):
        """`weight * values`, 0 where the weight is 0 (padding may hold a NaN)."""
        if self.weight is None:
            return values
        # The value is selected before the product ("double where"): 0 * NaN
        # is NaN, in the value and in the gradient, so a masked NaN must be
        # replaced before it is multiplied.
        return ops.where(self.weighted, values, 0.0) * self.weight

    def columns(self):
        """The three `totals` columns, from the losses' values (no gradient)."""
        terms = self.terms(ops.stop_gradient(self.values))
        if self.weight is None:
            ones = ops.ones_like(terms)
            return [terms, ones, ones]
        # A NaN weight counts 1 in its task's weight sum: the task is present
        # and its loss is NaN (a NaN count would make it look absent).
        counts = ops.where(ops.isnan(self.weight), 1.0, self.weight)
        return [terms, counts, ops.cast(self.weighted, "float32")]


class GroupedLoss:
    """A per-element loss split into K task groups (base class).

    `totals()` gives the statistics of the groups, constants of the step:
    the weight rule and the logs read them. `weighted_sum(coefficients)`
    gives the objective, the only part the gradient flows through.

    Subclasses: `ByTaskId` (an id per example or per element) and
    `ByOutput` (one group per output of the model).
    """

    def totals(self):
        """A constant float `[K + 1, 3]` tensor of per-task totals.

        Row `k < K` holds task `k`'s sum of `weight * loss`, its sum of
        `weight`, and its number of elements with a non-zero weight. Row `K`
        counts the elements left out of every task that the step reports as
        bad input: column 2 those with an id outside `[0, K)` and a non-zero
        weight plus those with a negative weight, column 0 the latter alone
        (sample weights must be >= 0). Column 1 of row `K` means nothing.
        """
        raise NotImplementedError

    def task_sums(self):
        """`[K]`: each task's sum of `weight * loss`, differentiable."""
        raise NotImplementedError

    def weighted_sum(self, coefficients):
        """`sum_k coefficients[k] * task_sums()[k]`, for constant `coefficients` `[K]`."""
        return ops.sum(coefficients * self.task_sums())


class ByTaskId(GroupedLoss):
    """A per-element loss grouped by task id.

    Args:
        losses: float tensor, the per-element loss.
        task_ids: int tensor, with the shape of `losses` or a prefix of it.
        sample_weight: float tensor broadcastable the same way, or `None`.
        num_tasks: K, a Python int.
        example_mask: optional `[batch]` 0/1 tensor selecting examples.
    """

    def __init__(self, losses, task_ids, sample_weight, num_tasks, example_mask=None):
        flat = lambda t: t if t is None or len(t.shape) == 1 else ops.reshape(t, (-1,))  # per-example: flat already
        ids = flat(expand_to(as_index(task_ids), losses, "Task ids"))
        weight = flat(element_weights(losses, sample_weight, example_mask))
        valid = (ids >= 0) & (ids < num_tasks)
        # A negative weight puts its element in no task, like an invalid id,
        # and `totals` counts it as bad input.
        self.negative = None if weight is None else weight < 0
        if self.negative is not None:
            valid = valid & ops.logical_not(self.negative)
        self.ids = ops.where(valid, ids, num_tasks)
        self.num_tasks = num_tasks
        self.loss = _Weighted(flat(losses), weight)

    def totals(self):
        columns = self.loss.columns()
        # Row K, column 0: the number of negative weights (not the loss of
        # the elements left out, which would hide them and may be NaN).
        negative = 0.0 if self.negative is None else ops.cast(self.negative, "float32")
        columns[0] = ops.where(self.ids == self.num_tasks, negative, columns[0])
        # One scatter of the three columns.
        return backend.segment_sums(columns, self.ids, self.num_tasks + 1)

    def task_sums(self):
        terms = self.loss.terms(self.loss.values)
        return backend.segment_sums([terms], self.ids, self.num_tasks + 1)[: self.num_tasks, 0]

    def weighted_sum(self, coefficients):
        # Each element's coefficient (0 for an invalid id) times its term:
        # the gradient flows through one product, not back through the
        # grouping.
        per_element = ops.take(ops.concatenate([coefficients, ops.zeros((1,))]), self.ids)
        return ops.sum(per_element * self.loss.terms(self.loss.values))


class ByOutput(GroupedLoss):
    """One task per output: `losses` and `sample_weights` are lists, output `k` is task `k`.

    A `sample_weights` entry (and `example_mask`) may be `None`.
    """

    def __init__(self, losses, sample_weights, example_mask=None):
        self.losses, self.negative = [], []
        for loss, weight in zip(losses, sample_weights):
            weight = element_weights(loss, weight, example_mask)
            if weight is not None:
                # A negative weight leaves its element out of the task;
                # `totals` counts it as bad input.
                self.negative.append(weight < 0)
                weight = ops.where(self.negative[-1], 0.0, weight)
            self.losses.append(_Weighted(loss, weight))

    def totals(self):
        rows = [ops.stack([ops.sum(column) for column in loss.columns()]) for loss in self.losses]
        # No task ids, so no invalid ones: the last row counts the negative
        # weights (columns 0 and 2), if any.
        if not self.negative:
            return ops.stack([*rows, ops.zeros((3,))])
        negative = sum(ops.sum(ops.cast(n, "float32")) for n in self.negative)
        return ops.stack([*rows, ops.stack([negative, ops.zeros(()), negative])])

    def task_sums(self):
        return ops.stack([ops.sum(loss.terms(loss.values)) for loss in self.losses])
