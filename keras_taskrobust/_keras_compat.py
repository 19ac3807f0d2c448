"""Every touch of a framework internal, in one place.

keras-taskrobust otherwise uses public APIs only. The few private names of
Keras (and of TensorFlow, torch and keras-hub) that it relies on are reached
through the functions below, and each is listed in `INTERNALS` with a check
that it is still where this module expects it. `tests/test_keras_compat.py`
runs every check, so a release that moves one fails there, by name, and
nowhere else.
"""

import functools
import inspect

import keras
from keras import ops

# (what is touched, a zero-argument check that returns True while it exists).
# Checks import lazily: TensorFlow, torch and keras-hub are optional.
INTERNALS = []


def _internal(name, check):
    INTERNALS.append((name, check))


def _has(owner, attribute):
    return lambda: hasattr(owner, attribute)


# --- Layers and metrics ---------------------------------------------------

_internal("keras.layers.Layer._flatten_layers", _has(keras.layers.Layer, "_flatten_layers"))


def flatten_layers(layer, include_self=True, recursive=True):
    """Every layer inside `layer`: nested models and tracked attributes too.

    Public `Model.layers` lists direct children only, and not the layers a
    subclassed model keeps in attributes (`MinimaxModel.model`).
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


_internal("keras.metrics.Metric._direction", lambda: keras.metrics.Accuracy()._direction == "up")


def metric_direction(metric):
    """`"up"`, `"down"` or `None`: the direction Keras' `EarlyStopping` also reads."""
    return getattr(metric, "_direction", None)


# --- Global state and printing ----------------------------------------------


def _global_state():
    from keras.src.backend.common import global_state

    return global_state


_internal("keras.src.backend.common.global_state", lambda: hasattr(_global_state(), "get_global_attribute"))


def global_seed_generator():
    """Keras' global `SeedGenerator` (`None` until something draws from it)."""
    return _global_state().get_global_attribute("global_seed_generator")


def _io_utils():
    from keras.src.utils import io_utils

    return io_utils


_internal("keras.src.utils.io_utils.print_msg", lambda: callable(_io_utils().print_msg))


def print_msg(message):
    """Prints as Keras' callbacks do (to absl logging when Keras is told to)."""
    _io_utils().print_msg(message)


# --- Training loop ---------------------------------------------------------

_internal("keras.Model._aggregate_additional_loss", _has(keras.Model, "_aggregate_additional_loss"))


def additional_loss(model, losses):
    """The sum of `model.losses` as Keras' own `compute_loss` adds it."""
    return ops.sum(ops.stack([model._aggregate_additional_loss(loss) for loss in losses]))


_internal("keras.Model._flatten_metrics_in_order", _has(keras.Model, "_flatten_metrics_in_order"))


def logs_as_list(model, logs):
    """`evaluate`'s list return value, in Keras' order, from its dict logs."""
    return model._flatten_metrics_in_order(logs)


def _jax_trainer_jits_train_step():
    from keras.src.backend.jax import trainer

    return "self.train_step" in inspect.getsource(trainer.JAXTrainer.make_train_function)


_internal("JAXTrainer.make_train_function jits `self.train_step`",
          lambda: keras.backend.backend() != "jax" or _jax_trainer_jits_train_step())


def fresh_train_step(model):
    """Gives `model` a `train_step` callable of its own, for the next trace.

    JAX caches traces by the function it jits, and Keras jits
    `model.train_step`, a bound method equal to every other one of the
    model: a step traced for one weighting rule would be found again for
    another. A new callable per build keeps them apart.
    """
    model.__dict__["train_step"] = functools.partial(type(model).train_step, model)


def _tensorflow_trainer_check():
    from keras.src.backend.tensorflow import trainer

    source = inspect.getsource(trainer)
    return "def _maybe_symbolic_build(self, iterator=None, data_batch=None)" in source and (
        "self._distribute_strategy" in source
    )


_internal("TensorFlowTrainer._maybe_symbolic_build and ._distribute_strategy",
          lambda: keras.backend.backend() != "tensorflow" or _tensorflow_trainer_check())


class FirstShardBuild:
    """A mixin for models whose inputs must not be averaged over replicas.

    Under a `tf.distribute` strategy, Keras builds a model from the first
    batch *averaged over the replicas*, which turns integer task ids into
    floats and fails on bool inputs (keras-hub's `padding_mask`). Models
    with this mixin are built from the first replica's shard instead.
    `_maybe_symbolic_build` is called by the TensorFlow trainer only.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None:
            for _, _, batches in iterator:
                first_shard = strategy.experimental_local_results
                data_batch = keras.tree.map_structure(lambda v: first_shard(v)[0], next(batches))
                break
        return super()._maybe_symbolic_build(data_batch=data_batch)


_internal("LossScaleOptimizer's non-finite handlers and _common_apply",
          lambda: all(hasattr(keras.optimizers.LossScaleOptimizer, name) for name in
                      ("_stateful_handle_non_finite_grads", "_stateless_handle_non_finite_grads",
                       "_common_apply")))


def _torch_compiling():
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class SkipNonFiniteSteps(keras.optimizers.LossScaleOptimizer):
    """Applies `inner_optimizer`'s update only when every gradient is finite.

    A step whose gradients hold a NaN or an infinity leaves the weights and
    the optimizer's state exactly as they were, as optax's `apply_if_finite`
    does. Keras' `LossScaleOptimizer` already skips such steps, on every
    backend and under `tf.distribute`; with its scale held at 1 (the loss
    and gradients are multiplied and divided by exactly 1.0) and its
    non-finite handlers no longer halving the scale, skipping is all it does.
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        kwargs.pop("initial_scale", None)
        kwargs.pop("dynamic_growth_steps", None)
        super().__init__(inner_optimizer, initial_scale=1.0, dynamic_growth_steps=2**31 - 1, name=name, **kwargs)

    def _stateful_handle_non_finite_grads(self):
        pass

    def _stateless_handle_non_finite_grads(self, optimizer_variables, trainable_variables):
        return trainable_variables, list(optimizer_variables)

    def check_finite(self, grads):
        # `g * 0` is 0 where g is finite and NaN where it is not, so one sum
        # per gradient tells. Keras' check stacks a list of scalar tensors,
        # which on eager torch cost more than the optimizer's own update
        # (benchmarks/RESULTS.md, "How fast is MinimaxModel against the Group
        # DRO loop a PyTorch user would write?").
        # TensorFlow gives an embedding's gradient as IndexedSlices: its values are what is checked.
        values = [g.values if type(g).__name__ == "IndexedSlices" else g for g in grads if g is not None]
        sums = [ops.sum(v * 0.0) for v in values]  # backend tensors: no op dispatch
        return ops.isfinite(sum(sums[1:], sums[0]))

    def _stateful_handle_finite_grads(self, grads, trainable_variables):
        # The scale is exactly 1: the gradients need no unscaling, and the
        # step counter never reaches Keras' growth step.
        self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)
        self.step_counter.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # JAX's stateless step, without a branch: XLA keeps the two sides of
        # Keras' `ops.cond` out of the step's fusions, which cost about a
        # tenth of the head-to-head MLP's step; a `where` on each new value
        # fuses into the update (benchmarks/RESULTS.md, "What does
        # MinimaxModel add to each training step?"). The scale is exactly 1,
        # so the gradients need no unscaling; the only own variable that
        # changes is the step counter, as in Keras' finite branch.
        finite = self.check_finite(grads)
        own = len(self._variables)
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            list(optimizer_variables[own:]), grads, trainable_variables
        )
        keep = lambda new, old: [ops.where(finite, n, o) for n, o in zip(new, old)]
        new_own = [
            ops.where(finite, value + 1, value) if variable is self.step_counter else value
            for variable, value in zip(self._variables, optimizer_variables[:own])
        ]
        return keep(new_trainable, trainable_variables), new_own + keep(new_inner, optimizer_variables[own:])

    def _common_apply(self, grads, trainable_variables=None):
        if not _torch_compiling():
            return super()._common_apply(grads, trainable_variables)
        # Under torch.compile, without a branch: Keras' torch `ops.cond` is a
        # Python `if` on a tensor, which breaks the compiled graph at every
        # step (the step then gains nothing from compilation). Apply the
        # update, then keep the old values where a gradient is not finite. The
        # scale is exactly 1, so the gradients need no unscaling.
        finite = self.check_finite(grads)
        variables = list(trainable_variables or self._trainable_variables) + list(self.inner_optimizer.variables)
        old = [ops.copy(v.value) for v in variables]
        self.inner_optimizer.apply(grads, trainable_variables)
        for variable, value in zip(variables, old):
            variable.assign(ops.where(finite, variable.value, value))
        self.step_counter.assign(ops.where(finite, self.step_counter + 1, self.step_counter))


def skipping_non_finite(optimizer):
    """`optimizer` wrapped so that non-finite steps change nothing (a loss-scale optimizer already skips them)."""
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return SkipNonFiniteSteps(optimizer)


# --- TensorFlow, torch and keras-hub ----------------------------------------


def _tf_multi_worker_check():
    import tensorflow as tf

    return hasattr(tf.distribute.MultiWorkerMirroredStrategy().extended, "_in_multi_worker_mode")


_internal("tf.distribute strategy.extended._in_multi_worker_mode",
          lambda: keras.backend.backend() != "tensorflow" or _tf_multi_worker_check())


def in_multi_worker_mode(strategy):
    """Whether a `MultiWorkerMirroredStrategy` spans several workers."""
    return strategy.extended._in_multi_worker_mode()


def _torch_ddp_check():
    import torch

    return hasattr(torch.nn.parallel.DistributedDataParallel, "_get_active_ddp_module")


_internal("torch DistributedDataParallel._get_active_ddp_module",
          lambda: keras.backend.backend() != "torch" or _torch_ddp_check())


def ddp_runs_forward():
    """Whether the current forward pass runs inside a torch DDP module."""
    import torch

    return torch.nn.parallel.DistributedDataParallel._get_active_ddp_module() is not None


def _keras_hub_internals():
    from keras_hub.src.tokenizers import word_piece_tokenizer
    from keras_hub.src.utils import tensor_utils

    return word_piece_tokenizer, tensor_utils


_internal("keras_hub.src.tokenizers.word_piece_tokenizer.pretokenize_python",
          lambda: callable(_keras_hub_internals()[0].pretokenize_python))
_internal("keras_hub.src.utils.tensor_utils.preprocessing_function",
          lambda: callable(_keras_hub_internals()[1].preprocessing_function))
_internal("keras_hub WordPieceTokenizer._special_tokens_for_splitting",
          lambda: hasattr(_keras_hub_internals()[0].WordPieceTokenizer, "_special_tokens_for_splitting"))
_internal("keras_hub PreprocessingLayer(_allow_python_workflow=...)",
          lambda: tf_masked_lm_mask_generator(vocabulary_size=8, mask_selection_rate=0.5, mask_token_id=1,
                                              mask_selection_length=2)._allow_python_workflow is False)


def pretokenize(text, tokenizer):
    """`text` split into words exactly as keras-hub's WordPiece `tokenizer` splits it."""
    method = getattr(tokenizer, "_special_tokens_for_splitting", None)
    special = None if method is None else method()  # older keras-hub: none
    return _keras_hub_internals()[0].pretokenize_python(
        text, tokenizer.lowercase, tokenizer.strip_accents, tokenizer.split, tokenizer.split_on_cjk, special
    )


def preprocessing_function(fn):
    """keras-hub's decorator for a preprocessing layer method that runs TF ops on any backend."""
    return _keras_hub_internals()[1].preprocessing_function(fn)


def tf_masked_lm_mask_generator(**kwargs):
    """keras-hub's `MaskedLMMaskGenerator`, always on its TensorFlow path (inside `tf.data` and eagerly alike)."""
    import keras_hub

    return keras_hub.layers.MaskedLMMaskGenerator(**kwargs, _allow_python_workflow=False)
