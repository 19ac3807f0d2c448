"""Reduction of per-element losses into per-task sums and counts."""

from keras import ops


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


def sums_by_task_id(losses, task_ids, sample_weight, num_tasks, example_mask=None):
    """Per-task weighted loss sums and weight counts from task ids.

    Args:
        losses: float tensor, the per-element loss.
        task_ids: int tensor, with the shape of `losses` or a prefix of it.
        sample_weight: float tensor broadcastable the same way, or `None`.
        num_tasks: K, a Python int.
        example_mask: optional `[batch]` 0/1 tensor selecting examples.

    Returns:
        `(sums, counts, invalid)`: float `[K]` sums of `weight * loss`, float
        `[K]` sums of `weight`, and the number of elements with a non-zero
        weight whose id lies outside `[0, K)` (those are left out of both).
    """
    ids = ops.reshape(expand_to(task_ids, losses, "Task ids"), (-1,))
    weight = ops.reshape(element_weights(losses, sample_weight, example_mask), (-1,))
    losses = ops.reshape(ops.cast(losses, "float32"), (-1,))
    valid = ops.logical_and(ids >= 0, ids < num_tasks)
    weighted = weight > 0
    invalid = ops.sum(ops.cast(ops.logical_and(weighted, ops.logical_not(valid)), "int32"))
    weight = ops.where(valid, weight, 0.0)
    # `where`, not a product: a position of weight 0 (padding) may hold a NaN.
    contribution = ops.where(weight > 0, weight * losses, 0.0)
    ids = ops.where(valid, ids, 0)
    sums = ops.segment_sum(contribution, ids, num_segments=num_tasks)
    counts = ops.segment_sum(weight, ids, num_segments=num_tasks)
    return sums, counts, invalid


def sums_of_output(losses, sample_weight, example_mask=None):
    """Weighted loss sum and weight count of one output (one task)."""
    weight = element_weights(losses, sample_weight, example_mask)
    losses = ops.cast(losses, "float32")
    contribution = ops.where(weight > 0, weight * losses, 0.0)
    return ops.sum(contribution), ops.sum(weight)
