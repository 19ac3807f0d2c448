"""A Keras model trained on the worst of K task losses."""

import keras
from keras import ops

from keras_taskrobust import _keras_compat as compat
from keras_taskrobust import backend
from keras_taskrobust.callbacks import task_guard
from keras_taskrobust.metrics.task_losses import TaskLosses
from keras_taskrobust.metrics.task_losses import expand_task_logs
from keras_taskrobust.models import task_inputs
from keras_taskrobust.models.task_gram import TaskGram
from keras_taskrobust.rules.weighting_rule import WeightingRule
from keras_taskrobust.rules.weighting_rule import keep_unseen_weights


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class MinimaxModel(compat.FirstShardBuild, keras.Model):
    """Trains a model on a weighted sum of K task losses, `sum_k w_k * L_k`.

    `MinimaxModel` wraps any Keras model (functional, Sequential, subclassed,
    a keras-hub task) and splits its training loss into K task groups. Each
    step computes the group losses `L_k` (the mean per-element loss of the
    group's elements in the batch, sample weights respected) and minimises
    `sum_k w_k * L_k` with the task weights `w` held fixed (no gradient flows
    into them). The weights live in the non-trainable variable
    `task_weights`; they stay uniform (`1 / K`, the average of the task
    losses) unless a `keras_taskrobust.callbacks.MirrorDescent` callback
    turns on a rule that moves them towards the worst tasks.

    Tasks are given in one of three forms:

    - per example: `x` is a dict whose entry `task_key` holds an integer
      task id in `[0, K)` for each example (shape `[batch]`);
    - per element: the same entry has the shape of the per-element loss
      (e.g. `[batch, masked_tokens]` for a masked language model); positions
      to ignore (padding, unmasked tokens) get sample weight 0;
    - per output: `task_key=None` and the model has K outputs, one loss each;
      output `k` is task `k`. `task_names` must then be the output names when
      the outputs are a dict.

    The task entry is removed from `x` before the wrapped model is called; if
    a single input remains, the model receives it as a tensor.

    A task absent from a batch has no loss in that batch: it neither produces
    a NaN nor gets a fake zero; its last estimate is kept (see
    `WeightingRule.estimate`).

    Logs (and `History`) hold `loss` (the weighted objective), `loss/worst`,
    and `loss/<task>` and `weight/<task>` for every task. `evaluate` reports
    the same keys and never changes the weights.

    Data-parallel training (`keras.distribution` on JAX, `tf.distribute`,
    a torch DDP loop) computes the group losses of the *global* batch, so
    that every replica holds the same weights and training follows the
    single-device trajectory (`guides/distributed_training.py`).

    Args:
        model: the `keras.Model` to train.
        num_tasks: K. Optional when `task_names` is given.
        task_names: K names used in log keys. Defaults to
            `task_0, ..., task_{K-1}`, or to the output names for a
            per-output model with dict outputs.
        task_key: the key of `x` that holds the task ids, or `None` for one
            task per output. Defaults to `"task_id"`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_taskrobust import MinimaxModel
    >>> from keras_taskrobust.callbacks import MirrorDescent
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model = MinimaxModel(net, task_names=["easy", "hard"])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = {"features": np.random.rand(64, 4), "task_id": np.arange(64) % 2}
    >>> y = np.random.rand(64, 1) * (1 + 4 * (np.arange(64) % 2))[:, None]
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[MirrorDescent("exponentiated_gradient")])
    >>> sorted(k for k in history.history if k.startswith("weight/"))
    ['weight/easy', 'weight/hard']
    """

    def __init__(self, model, num_tasks=None, task_names=None, task_key="task_id", **kwargs):
        super().__init__(**kwargs)
        # === Config ===
        task_names = task_inputs.task_names(num_tasks, task_names)
        self.num_tasks = len(task_names)
        self.task_names = task_names
        self.task_key = task_key

        # === Layers ===
        self.model = model

        # === State ===
        k = self.num_tasks
        # Every replica computes the same new values from the global batch;
        # under tf.distribute the first replica's write is kept.
        state = dict(trainable=False, aggregation="only_first_replica")
        self.task_weights = self.add_weight(
            shape=(k,), initializer=keras.initializers.Constant(1.0 / k), name="task_weights", **state
        )
        self.loss_estimates = self.add_weight(shape=(k,), initializer="zeros", name="loss_estimates", **state)
        self.task_counts = self.add_weight(shape=(k,), initializer="zeros", name="task_counts", **state)
        self.task_step = self.add_weight(shape=(), initializer="zeros", dtype="int32", name="task_step", **state)
        # The rule's estimates of the held-out losses (`MirrorDescent(held_out=...)`).
        self.held_out_losses = self.add_weight(shape=(k,), initializer="zeros", name="held_out_losses", **state)
        self.task_losses = TaskLosses(self.task_names)

        # === What the training step traces (settings, untracked) ===
        # The `MirrorDescent` in force (see `use_weighting`).
        self.__dict__.update(weighting=None, task_gram=TaskGram(self), _traced=None)
        # A wrapper of a built model is built (BackupAndRestore needs it).
        self.built = model.built

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        # A step with a non-finite gradient changes no weight and no optimizer state.
        optimizer = None if optimizer is None else compat.skipping_non_finite(optimizer)
        super().compile(optimizer, *args, **kwargs)

    def compile_from_config(self, config):
        # What Keras does, which it skips for a model with its own `compile`.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        backend.note_forward()
        if training and self.model.non_trainable_variables and backend.num_replicas() == 1:
            # The layers' own state (batch statistics) as it was before this
            # step: a non-finite step restores it (`compute_loss`). Per thread:
            # tf.distribute runs replicas in threads.
            kept = [ops.copy(v.value) for v in self.model.non_trainable_variables]
            self.__dict__.setdefault("_layer_state", {})[backend.replica_key()] = kept
        model_inputs = task_inputs.model_inputs(inputs, self.task_key)
        try:
            representation = getattr(self.weighting and self.weighting.rule, "representation", None)
            if training and representation is not None:
                # Lookahead differentiates the task losses with respect to
                # this layer's output: run the model in two parts, keep it.
                return self.task_gram.forward(model_inputs, representation, training)
            return self.model(model_inputs, training=training)
        except (ValueError, TypeError) as error:
            # Inputs left unmatched by a missing task key: say so, not only
            # that the model's input structure does not match.
            if isinstance(inputs, dict) and self.task_key not in inputs:
                raise task_inputs.missing_key_error(inputs, self.task_key) from error
            raise

    # --- The weighting rule --------------------------------------------------

    def use_weighting(self, descent):
        """Makes the `MirrorDescent` `descent` (or `None`) drive the training step.

        `fit` calls it with the `MirrorDescent` among its callbacks, for that
        `fit` only; in a custom training loop, the callback's `on_train_begin`
        calls it. A step traced for the same settings is kept (a schedule in a
        rule's config compares by identity), so that `fit` in a loop compiles
        once; otherwise it is rebuilt. `compile` drops it, and Keras builds a
        new one.
        """
        self.task_gram.prepare(descent and descent.rule)  # eagerly, before the step is traced
        self.weighting = descent
        if self.train_function is not None and self._traced != self._step_settings():
            self.make_train_function(force=True)

    def _step_settings(self):
        d = self.weighting  # what the step reads of it, below
        return d and (type(d.rule), repr(d.rule.get_config()), d.update_every, d.warmup_steps, d.held_out is None,
                      d.reference_losses, id(d.reference))

    def make_train_function(self, force=False):
        if force or self.train_function is None:
            compat.fresh_train_step(self)
            self.__dict__["_traced"] = self._step_settings()
        return super().make_train_function(force=force)

    # --- Loss ----------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        k = self.num_tasks
        grouped = task_inputs.grouped_loss(self, x, y, y_pred, sample_weight)
        # The group losses of the *global* batch: under tf.distribute (or
        # torch DDP) this step sees one replica's shard, and a group may be
        # absent from one shard and present in another, so the totals are
        # summed over the replicas first. Every replica then computes the
        # same weights. (On JAX the step already sees the global batch.)
        totals = backend.replica_sum(grouped.totals())
        sums, counts = totals[:k, 0], totals[:k, 1]
        present = counts > 0
        safe_counts = ops.maximum(counts, 1e-12)
        batch_losses = sums / safe_counts
        finite = ops.isfinite(ops.sum(sums))  # absent tasks add 0

        # Read, not copied: the step computes the new values before it writes
        # the variables, and the loss below uses those new tensors (torch
        # forbids writing a tensor that the backward pass needs).
        weights, estimates = self.task_weights.value, self.loss_estimates.value
        if training:
            rule = self.weighting and self.weighting.rule
            gram = signal = None
            if rule is not None and rule.needs_gradients:
                gram = self.task_gram(x, y, y_pred, sample_weight, rule)
            if rule is not None and self.weighting.reference is not None and self.weighting.held_out is None:
                signal = self._excess_over_reference(x, y, y_pred, sample_weight, safe_counts)
            weights, estimates = self._update_task_state(
                weights, estimates, batch_losses, present, finite, counts, gram, signal
            )
            kept = self.__dict__.get("_layer_state", {}).pop(backend.replica_key(), None)
            for variable, old in zip(self.model.non_trainable_variables, kept or ()):
                variable.assign(ops.where(finite, variable.value, old))
        # This replica's share of the objective: its part of each group's sum
        # over the global count, `sum_k w_k / n_k * sum_{i in k} l_i`. The
        # shares' gradients add up to the gradient of the global objective,
        # and their values to its value. Absent tasks contribute their
        # (constant) estimate and no gradient.
        replicas = backend.num_replicas()
        absent = estimates if replicas == 1 else estimates / float(replicas)
        coefficients = ops.where(present, weights / safe_counts, 0.0)
        absent_part = ops.sum(ops.where(present, 0.0, weights * absent))
        loss = grouped.weighted_sum(ops.stop_gradient(coefficients)) + ops.stop_gradient(absent_part)
        if backend.loss_scale() != 1:  # torch DDP averages the gradients
            loss = loss * float(backend.loss_scale())
        self.task_losses.update_state(totals, weights, estimates)
        if self.losses:
            loss = loss + compat.additional_loss(self, self.losses)
        return loss

    def _excess_over_reference(self, x, y, y_pred, sample_weight, counts):
        """`[K]`: each task's mean per-element excess over the reference model's loss on this batch.

        The reference (`MirrorDescent(reference=...)`, frozen) predicts the
        same examples in inference mode; a constant of the step.
        """
        ref_pred = self.weighting.reference(task_inputs.model_inputs(x, self.task_key), training=False)
        excess = task_inputs.grouped_loss(task_inputs.ExcessLoss(self, ref_pred), x, y, y_pred, sample_weight)
        sums = backend.replica_sum(excess.totals())[: self.num_tasks, 0]
        return ops.stop_gradient(sums / counts)

    def _update_task_state(self, weights, estimates, batch_losses, present, finite, counts, gram=None, signal=None):
        """Runs the weight rule (if any) and writes the new state variables.

        `batch_losses`, `counts`, `gram` and `signal` (the excess over a
        reference model, if any) are constants of the step (their replica
        sums stop the gradient). Returns the new weights and estimates, new
        tensors (not the variables' storage).
        """
        descent = self.weighting
        step = self.task_step.value
        seen = self.task_counts.value > 0
        if descent is not None and descent.held_out is not None:
            descent = None  # the rule runs on held-out losses, outside the step
        if descent is None:
            # No rule: keep the last loss of each task, unaveraged.
            new_estimates = WeightingRule().estimate(estimates, batch_losses, present, seen)
            new_weights = weights
        else:
            rule = descent.rule
            signal = descent.signal(batch_losses if signal is None else signal)
            new_estimates = rule.estimate(estimates, signal, present, seen)
            first = ops.logical_and(present, ops.logical_not(seen))
            extra = rule.update_inputs(estimates, new_estimates, first, gram)
            if descent.warmup_steps == 0 and descent.update_every == 1:
                new_weights = rule.update(weights, new_estimates, step, **extra)
            else:
                warm = step >= descent.warmup_steps
                updates = ops.maximum(step - descent.warmup_steps, 0)
                due = ops.logical_and(warm, updates % descent.update_every == 0)
                proposed = rule.update(weights, new_estimates, updates // descent.update_every, **extra)
                uniform = ops.ones_like(weights) / float(self.num_tasks)
                new_weights = ops.where(due, proposed, ops.where(warm, weights, uniform))
            new_weights = keep_unseen_weights(weights, new_weights, present | seen)
        # A non-finite loss changes no task state; the fit guard stops
        # training, naming the task.
        new_weights = ops.where(finite, new_weights, weights)
        new_estimates = ops.where(finite, new_estimates, estimates)
        self.task_weights.assign(new_weights)
        self.loss_estimates.assign(new_estimates)
        self.task_counts.assign_add(ops.where(finite, counts, 0.0))
        self.task_step.assign(ops.where(finite, step + 1, step))
        return new_weights, new_estimates

    # --- Logs, fit and evaluate -------------------------------------------------

    def get_metrics_result(self):
        return backend.reducible_logs(super().get_metrics_result())

    def fit(self, *args, **kwargs):
        return task_guard.run_guarded(self, super().fit, args, kwargs, training=True)

    def evaluate(self, *args, return_dict=False, **kwargs):
        logs = task_guard.run_guarded(self, super().evaluate, args, {**kwargs, "return_dict": True}, training=False)
        expand_task_logs(logs, self.task_names)
        return logs if return_dict else compat.logs_as_list(self, logs)

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "task_names": self.task_names,
            "task_key": self.task_key,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = {**config, "model": keras.saving.deserialize_keras_object(config["model"], custom_objects)}
        return cls(**config)
