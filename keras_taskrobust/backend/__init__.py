"""The little that differs between backends: per-task gradients, replicas.

Each module defines `task_gradients(losses, loss_fn, values)`, returning
the `[n, P]` matrix whose row `k` is the gradient of `losses[k]` with respect
to `values` (flattened and concatenated): tensors of the training step, such
as variables' values or a layer's output. `losses` is the `[n]` tensor
already computed in the step; `loss_fn(values)` recomputes it from `values`,
for backends that cannot differentiate the step's own graph a second time
(JAX, whose step is itself under `jax.grad`, and eager TensorFlow, whose tape
belongs to the trainer).

`segment_sums(columns, ids, num_segments)` stacks the `[n]` tensors
`columns` into `[n, C]` and sums their rows by segment id into
`[num_segments, C]` (ids in `[0, num_segments)`): the grouping of every
training step, a single scatter on each backend.

`gradient(fn, value)`: the gradient of the scalar `fn(value)` with respect
to the tensor `value`, computed eagerly (outside the training step).

`compiled(fn)`: `fn`, a pure function of tensors, compiled where an eager
call would cost much more (JAX); `fn` itself elsewhere.

And the view of data-parallel training (the global batch split into shards,
one per replica) that `MinimaxModel` needs to compute its group losses on the
global batch:

- `note_forward()`: called as `MinimaxModel.call` starts (torch notes
  whether DDP runs the forward pass);
- `replica_sum(values)`: `values` (a float tensor) summed over the replicas,
  as a constant (no gradient flows through the sum);
- `num_replicas()`: the number of replicas whose shards make up the batch;
- `replica_offset(size)`: the position of this replica's first example in
  the global batch, given its shard's `size`;
- `replica_key()`: a key under which a step keeps what its forward pass
  hands to its loss (`MinimaxModel`, `TaskGram`): the thread under
  `tf.distribute`, which runs the replicas' steps in threads; one key
  elsewhere (torch.compile cannot trace `threading.get_ident`);
- `loss_scale()`: the factor of each replica's loss that makes the engine's
  reduction of the replicas' gradients the gradient of the global objective;
- `reducible_logs(logs)`: a step's logs in the shape the engine's reduction
  over replicas expects (a workaround for Keras' multi-worker `fit`).

On JAX, `keras.distribution` jits the step over globally sharded arrays: the
step sees the whole batch, and these are the identity (XLA inserts the
collectives). Under `tf.distribute`, the step runs once per replica on its
shard; Keras sums the replicas' gradients. Under torch DDP (a custom loop:
Keras' torch `fit` is single-process), each process runs on its shard and DDP
averages the gradients; a forward pass not run by DDP is single-process.
"""

import keras

__all__ = [
    "compiled",
    "gradient",
    "loss_scale",
    "note_forward",
    "num_replicas",
    "reducible_logs",
    "replica_key",
    "replica_offset",
    "replica_sum",
    "segment_sums",
    "task_gradients",
]

_backend = keras.backend.backend()
if _backend == "jax":
    from keras_taskrobust.backend.jax import compiled
    from keras_taskrobust.backend.jax import gradient
    from keras_taskrobust.backend.jax import loss_scale
    from keras_taskrobust.backend.jax import note_forward
    from keras_taskrobust.backend.jax import num_replicas
    from keras_taskrobust.backend.jax import reducible_logs
    from keras_taskrobust.backend.jax import replica_key
    from keras_taskrobust.backend.jax import replica_offset
    from keras_taskrobust.backend.jax import replica_sum
    from keras_taskrobust.backend.jax import segment_sums
    from keras_taskrobust.backend.jax import task_gradients
elif _backend == "tensorflow":
    from keras_taskrobust.backend.tensorflow import compiled
    from keras_taskrobust.backend.tensorflow import gradient
    from keras_taskrobust.backend.tensorflow import loss_scale
    from keras_taskrobust.backend.tensorflow import note_forward
    from keras_taskrobust.backend.tensorflow import num_replicas
    from keras_taskrobust.backend.tensorflow import reducible_logs
    from keras_taskrobust.backend.tensorflow import replica_key
    from keras_taskrobust.backend.tensorflow import replica_offset
    from keras_taskrobust.backend.tensorflow import replica_sum
    from keras_taskrobust.backend.tensorflow import segment_sums
    from keras_taskrobust.backend.tensorflow import task_gradients
elif _backend == "torch":
    from keras_taskrobust.backend.torch import compiled
    from keras_taskrobust.backend.torch import gradient
    from keras_taskrobust.backend.torch import loss_scale
    from keras_taskrobust.backend.torch import note_forward
    from keras_taskrobust.backend.torch import num_replicas
    from keras_taskrobust.backend.torch import reducible_logs
    from keras_taskrobust.backend.torch import replica_key
    from keras_taskrobust.backend.torch import replica_offset
    from keras_taskrobust.backend.torch import replica_sum
    from keras_taskrobust.backend.torch import segment_sums
    from keras_taskrobust.backend.torch import task_gradients
else:  # pragma: no cover
    raise ImportError(f"keras_taskrobust does not support the {_backend!r} backend.")
