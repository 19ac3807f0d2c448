"""Reduction of per-element losses into per-task sums and counts."""

from keras import ops

from keras_taskrobust import backend


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
    """Per-element weights with the shape of `losses`.

    `sample_weight` (or 1) times `example_mask`, a `[batch]` 0/1 selection of
    examples (or `None` for all of them).
    """
    if sample_weight is None:
        weight = ops.ones_like(losses, dtype="float32")
    else:
        weight = ops.cast(expand_to(sample_weight, losses, "Sample weights"), "float32")
    if example_mask is not None:
        weight = weight * ops.cast(expand_to(example_mask, losses, "Example mask"), "float32")
    return weight


def totals_by_task_id(losses, task_ids, sample_weight, num_tasks, example_mask=None):
    """Per-task totals of a per-element loss, grouped by task id.

    Args:
        losses: float tensor, the per-element loss.
        task_ids: int tensor, with the shape of `losses` or a prefix of it.
        sample_weight: float tensor broadcastable the same way, or `None`.
        num_tasks: K, a Python int.
        example_mask: optional `[batch]` 0/1 tensor selecting examples.

    Returns:
        A float `[K + 1, 3]` tensor. Row `k < K` holds task `k`'s sum of
        `weight * loss`, its sum of `weight`, and its number of elements with
        a non-zero weight; row `K` holds the same for the elements whose id
        lies outside `[0, K)`, which are left out of every task. One segment
        sum computes it all.
    """
    flat = lambda t: t if len(t.shape) == 1 else ops.reshape(t, (-1,))  # per-example: flat already
    ids = flat(expand_to(task_ids, losses, "Task ids"))
    ids = ops.where((ids >= 0) & (ids < num_tasks), ids, num_tasks)
    values = flat(ops.cast(losses, "float32"))
    if sample_weight is None and example_mask is None:
        ones = ops.ones_like(values)
        columns = [values, ones, ones]
    else:
        weight = flat(element_weights(losses, sample_weight, example_mask))
        weighted = weight > 0
        # `where`, not a product: a position of weight 0 (padding) may hold a NaN.
        columns = [ops.where(weighted, weight * values, 0.0), weight, ops.cast(weighted, "float32")]
    return backend.segment_sums(columns, ids, num_tasks + 1)


def totals_of_output(losses, sample_weight, example_mask=None):
    """The `[3]` totals of one output (one task), as in `totals_by_task_id`."""
    weight = element_weights(losses, sample_weight, example_mask)
    weighted = weight > 0
    contribution = ops.where(weighted, weight * ops.cast(losses, "float32"), 0.0)
    return ops.stack([ops.sum(contribution), ops.sum(weight), ops.sum(ops.cast(weighted, "float32"))])
