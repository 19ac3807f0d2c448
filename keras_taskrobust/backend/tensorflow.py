import threading

import tensorflow as tf

from keras_taskrobust import _keras_compat as compat


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


def gradient(fn, value):
    value = tf.convert_to_tensor(value)
    with tf.GradientTape() as tape:
        tape.watch(value)
        out = fn(value)
    return tape.gradient(out, value)


def segment_sums(columns, ids, num_segments):
    return tf.math.unsorted_segment_sum(tf.stack(columns, axis=1), ids, num_segments)


# Under tf.distribute (MirroredStrategy, MultiWorkerMirroredStrategy) the step
# runs once per replica on its shard; outside a strategy, or in its
# cross-replica context (Keras' symbolic build), there is one replica.


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def note_forward():
    pass


def replica_sum(values):
    values = tf.stop_gradient(values)
    context = _replica_context()
    if context is None:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def num_replicas():
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_key():
    return threading.get_ident()


def replica_offset(size):
    context = _replica_context()
    if context is None:
        return 0
    n = context.num_replicas_in_sync
    index = context.replica_id_in_sync_group
    # Every replica's shard size, in replica order (the last batch of an
    # epoch may be split unevenly).
    sizes = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.one_hot(index, n) * tf.cast(size, tf.float32)
    )
    return tf.cast(tf.reduce_sum(tf.where(tf.range(n) < index, sizes, 0.0)), tf.int32)


def loss_scale():
    # Keras sums the replicas' gradients (and scales its own losses by
    # 1 / replicas to match): a replica's share of the global loss is right.
    return 1


def _multi_worker():
    strategy = tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and compat.in_multi_worker_mode(strategy)


def reducible_logs(logs):
    # Keras 3.15 reduces each output of a multi-worker step with
    # `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar
    # (tensorflow/tensorflow#72388) and would average a vector's entries. With
    # a leading axis of length 1 it is the mean over the replicas.
    if not _multi_worker() or tf.distribute.in_cross_replica_context():
        return logs
    return {key: tf.expand_dims(value, 0) for key, value in logs.items()}


def compiled(fn):
    # Eager: a tf.function here would be traced in the cross-replica
    # context of tf.distribute, where the held-out `G` is computed.
    return fn
