import tensorflow as tf


def _flatten(gradients, variables):
    return tf.concat(
        [tf.reshape(tf.zeros_like(v) if g is None else g, [-1]) for g, v in zip(gradients, variables)],
        axis=0,
    )


def task_gradients(losses, loss_fn, values):
    n = losses.shape[0]
    if not tf.executing_eagerly():
        # In a tf.function the step's graph can be differentiated again.
        return tf.stack([_flatten(tf.gradients(losses[k], values), values) for k in range(n)])
    # Eager: the trainer owns the tape, so re-run the forward pass under ours.
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(values)
        rerun = loss_fn(values)
        rows = [rerun[k] for k in range(n)]
    gradients = [_flatten(tape.gradient(row, values), values) for row in rows]
    del tape
    return tf.stack(gradients)
