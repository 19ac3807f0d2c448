import jax
import jax.numpy as jnp


def task_gradients(losses, loss_fn, values):
    # The step is already under jax.grad: differentiate a re-run of the
    # forward pass (XLA shares what it can with the step's own).
    jacobian = jax.jacrev(loss_fn)(values)
    n = losses.shape[0]
    return jnp.concatenate([j.reshape(n, -1) for j in jacobian], axis=1)


def gradient(fn, value):
    return jax.grad(fn)(value)


def segment_sums(columns, ids, num_segments):
    return jax.ops.segment_sum(jnp.stack(columns, axis=1), ids, num_segments=num_segments)


# keras.distribution (DataParallel, ModelParallel, one host or several) jits
# the step over global arrays sharded across devices: the step sees the whole
# batch, and XLA inserts the cross-device sums itself.


def note_forward():
    pass


def replica_sum(values):
    return jax.lax.stop_gradient(values)


def num_replicas():
    return 1


def replica_key():
    return 0


def replica_offset(size):
    del size
    return 0


def loss_scale():
    return 1


def reducible_logs(logs):
    return logs


def compiled(fn):
    # Eager JAX dispatches every operation of a forward and backward pass
    # on its own; compiled, the held-out `G` costs what it costs in a step.
    return jax.jit(fn)
