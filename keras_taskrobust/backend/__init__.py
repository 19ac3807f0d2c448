"""The little that differs between backends: per-task gradients.

Each module defines `task_gradients(losses, loss_fn, values)`, returning
the `[n, P]` matrix whose row `k` is the gradient of `losses[k]` with respect
to `values` (flattened and concatenated): tensors of the training step, such
as variables' values or a layer's output. `losses` is the `[n]` tensor
already computed in the step; `loss_fn(values)` recomputes it from `values`,
for backends that cannot differentiate the step's own graph a second time
(JAX, whose step is itself under `jax.grad`, and eager TensorFlow, whose tape
belongs to the trainer).
"""

import keras

_backend = keras.backend.backend()
if _backend == "jax":
    from keras_taskrobust.backend.jax import task_gradients
elif _backend == "tensorflow":
    from keras_taskrobust.backend.tensorflow import task_gradients
elif _backend == "torch":
    from keras_taskrobust.backend.torch import task_gradients
else:  # pragma: no cover
    raise ImportError(f"keras_taskrobust does not support the {_backend!r} backend.")
