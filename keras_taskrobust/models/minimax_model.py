"""A Keras model trained on the worst of K task losses."""

import functools
import math
import threading
import warnings

import keras
import numpy as np
from keras import ops
from keras import tree

from keras_taskrobust import backend
from keras_taskrobust.metrics.task_losses import TASK_LOGS_KEY
from keras_taskrobust.metrics.task_losses import TaskLosses
from keras_taskrobust.metrics.task_losses import count_invalid_ids
from keras_taskrobust.metrics.task_losses import expand_task_logs
from keras_taskrobust.models import task_groups
from keras_taskrobust.rules.weighting_rule import WeightingRule


@keras.saving.register_keras_serializable(package="keras_taskrobust")
class MinimaxModel(keras.Model):
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
    the same keys and never changes the weights. Training batch logs hold
    the task keys when something reads them (the progress bar, a callback
    with a batch-end hook); otherwise, on JAX and torch, the step does not
    output them.

    Data-parallel training computes the group losses of the *global* batch,
    so that every replica holds the same weights and training follows the
    single-device trajectory: on JAX under `keras.distribution`
    (`DataParallel`, `ModelParallel`) the step sees the global batch; under
    `tf.distribute` (`MirroredStrategy`, `MultiWorkerMirroredStrategy`;
    create and compile the model in `strategy.scope()`) and in a torch DDP
    loop, the per-task sums and counts are summed over the replicas. See
    `guides/distributed_training.py`.

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
        if task_names is None:
            if num_tasks is None:
                raise ValueError(
                    "MinimaxModel needs the number of tasks: pass `num_tasks=K` "
                    "or `task_names=[...]`."
                )
            task_names = [f"task_{k}" for k in range(num_tasks)]
        task_names = [str(name) for name in task_names]
        if num_tasks is not None and num_tasks != len(task_names):
            raise ValueError(
                f"`num_tasks={num_tasks}` but {len(task_names)} `task_names` "
                f"were given ({task_names}); pass one name per task."
            )
        if len(set(task_names)) != len(task_names) or not task_names:
            raise ValueError(f"`task_names` must be distinct and non-empty; got {task_names}.")
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
        self.task_losses = TaskLosses(self.task_names)

        # Set by the MirrorDescent callback for the duration of `fit`.
        self.mirror_descent = None
        # Whether the training step's logs carry the per-task vector (see
        # `compute_metrics`); `fit` sets it.
        self._batch_task_logs = True
        # A wrapper of a built model is built (BackupAndRestore needs it).
        self.built = model.built

    def __call__(self, inputs, training=None, **kwargs):
        # The training step of a built wrapper calls `call` directly, and so
        # the wrapped model's own `__call__`, which converts, builds and sets
        # the training context as the entry layer. The wrapper has no weights,
        # masks or dtype policy of its own to apply, and Keras' `__call__` on
        # a dict input costs 0.2 ms of eager Python per step on torch, 5 % of
        # a small MLP's step (benchmarks/RESULTS.md).
        if training is True and self.built and not kwargs:
            return self.call(inputs, training=True)
        return super().__call__(inputs, training=training, **kwargs)

    def call(self, inputs, training=None):
        backend.note_forward()
        try:
            rule = self.mirror_descent and self.mirror_descent.rule
            representation = getattr(rule, "representation", None)
            if training and representation is not None:
                # Lookahead differentiates the task losses with respect to
                # this layer's output: run the model in two parts, keep it.
                trunk, head = self._split_at(representation)
                features = trunk(self._model_inputs(inputs), training=training)
                # Kept per thread: tf.distribute runs each replica's step in
                # a thread of its own. (Untracked: not a layer attribute.)
                self.__dict__.setdefault("_representations", {})[threading.get_ident()] = features
                return head(features, training=training)
            return self.model(self._model_inputs(inputs), training=training)
        except (ValueError, TypeError) as error:
            # Inputs left unmatched by a missing task key: say so, not only
            # that the model's input structure does not match.
            if isinstance(inputs, dict) and self.task_key not in inputs:
                raise self._missing_key_error(inputs) from error
            raise

    def _model_inputs(self, inputs):
        if self.task_key is None or not isinstance(inputs, dict):
            return inputs
        inputs = {k: v for k, v in inputs.items() if k != self.task_key}
        if len(inputs) == 1:
            return next(iter(inputs.values()))
        return inputs

    # --- Loss -------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        k = self.num_tasks
        self.__dict__["_step_trains"] = training  # for `compute_metrics`, next in the step
        grouped = self._grouped(x, y, y_pred, sample_weight)
        local = grouped.totals()
        # The group losses of the *global* batch: under tf.distribute (or
        # torch DDP) this step sees one replica's shard, and a group may be
        # absent from one shard and present in another, so the totals are
        # summed over the replicas first. Every replica then computes the
        # same weights. (On JAX the step already sees the global batch.)
        totals = backend.replica_sum(local)
        sums, counts = totals[:k, 0], totals[:k, 1]
        present = counts > 0
        safe_counts = ops.maximum(counts, 1e-12)
        batch_losses = sums / safe_counts
        finite = ops.isfinite(ops.sum(sums))  # absent tasks add 0

        # Read, not copied: the step computes the new values before it writes
        # the variables, and the loss below uses those new tensors, not the
        # variables' storage (torch forbids writing a tensor that the
        # backward pass needs).
        weights, estimates = self.task_weights.value, self.loss_estimates.value
        if training:
            rule = self.mirror_descent and self.mirror_descent.rule
            gram = None
            if rule is not None and rule.needs_gradients:
                gram = self._task_gram(x, y, y_pred, sample_weight, rule)
            weights, estimates = self._update_task_state(weights, estimates, batch_losses, present, finite, counts, gram)
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
            loss = loss + ops.sum(ops.stack([self._aggregate_additional_loss(l) for l in self.losses]))
        return loss

    def _update_task_state(self, weights, estimates, batch_losses, present, finite, counts, gram=None):
        """Runs the weight rule (if any) and writes the new state variables.

        `batch_losses`, `counts` and `gram` are constants of the step (their
        replica sums stop the gradient). Returns the new weights and
        estimates, new tensors (not the variables' storage).
        """
        descent = self.mirror_descent
        step = self.task_step.value
        seen = self.task_counts.value > 0
        if descent is None:
            # No rule: keep the last loss of each task, unaveraged.
            new_estimates = WeightingRule().estimate(estimates, batch_losses, present, seen)
            new_weights = weights
        else:
            rule = descent.rule
            new_estimates = rule.estimate(estimates, batch_losses, present, seen)
            extra = {"gram": gram} if rule.needs_gradients else {}
            if descent.warmup_steps == 0 and descent.update_every == 1:
                new_weights = rule.update(weights, new_estimates, step, **extra)
            else:
                warm = step >= descent.warmup_steps
                updates = ops.maximum(step - descent.warmup_steps, 0)
                due = ops.logical_and(warm, updates % descent.update_every == 0)
                proposed = rule.update(weights, new_estimates, updates // descent.update_every, **extra)
                uniform = ops.ones_like(weights) / float(self.num_tasks)
                new_weights = ops.where(due, proposed, ops.where(warm, weights, uniform))
        # A non-finite loss changes nothing: the weights stay finite and the
        # fit guard stops training, naming the task.
        new_weights = ops.where(finite, new_weights, weights)
        new_estimates = ops.where(finite, new_estimates, estimates)
        self.task_weights.assign(new_weights)
        self.loss_estimates.assign(new_estimates)
        self.task_counts.assign_add(counts)
        self.task_step.assign(step + 1)
        return new_weights, new_estimates

    def _split_at(self, name):
        """`(trunk, head)`: the wrapped model cut at layer `name`'s output."""
        cache = self.__dict__.setdefault("_splits", {})  # untracked: no new weights
        if name not in cache:
            layers = {layer.name: layer for layer in self.model._flatten_layers(include_self=False)}
            if name not in layers or not hasattr(self.model, "inputs"):
                raise ValueError(
                    f"Lookahead(representation={name!r}) needs a functional or "
                    f"Sequential model with a layer of that name; its layers are "
                    f"{sorted(layers)}."
                )
            output = layers[name].output
            # The wrapped model's input structure (a Sequential's is one tensor).
            inputs = self.model.inputs[0] if isinstance(self.model, keras.Sequential) else self.model.input
            cache[name] = (
                keras.Model(inputs, output),
                keras.Model(output, self.model.outputs),
            )
        return cache[name]

    def _task_gram(self, x, y, y_pred, sample_weight, rule):
        """`G`, the K x K inner products of the task-loss gradients."""
        inputs = self._model_inputs(x)

        # Data-parallel: each replica differentiates its share of the task
        # losses (its sums over the global counts); the Jacobians are summed.
        size = ops.shape(tree.flatten(y_pred)[0])[0]
        offset = backend.replica_offset(size) if rule.split_batch else 0

        def task_losses(y_pred):
            if not rule.split_batch:
                return self._task_shares(x, y, y_pred, sample_weight)
            # Task losses on the even and on the odd examples of the global
            # batch: [2K].
            parity = (ops.arange(size) + offset) % 2
            halves = []
            for half in (0, 1):
                mask = ops.cast(parity == half, "float32")
                halves.append(self._task_shares(x, y, y_pred, sample_weight, mask))
            return ops.concatenate(halves)

        if rule.representation is not None:
            features = self._representations.pop(threading.get_ident())
            head = self._split_at(rule.representation)[1]

            def rerun(values):
                # Stateless: a re-run must not update the head's state again
                # (batch normalisation's moving statistics).
                return task_losses(_stateless_forward(head, values[0]))

            segments = None
            ids = None if self.task_key is None else self._task_ids(x)
            if ids is not None and len(ids.shape) == 1:
                # Per-example tasks: the row of example i's task (and half).
                # Invalid ids are in no task: their examples' gradients are 0.
                k = self.num_tasks
                segments = ops.where((ids >= 0) & (ids < k), ids, 0)
                if rule.split_batch:
                    segments = segments + k * ((ops.arange(size) + offset) % 2)
            jacobian = self._representation_jacobian(rule.representation, features, task_losses(y_pred), rerun, segments)
            jacobian = backend.replica_sum(jacobian)
        else:
            variables = self._gradient_variables(rule.layers)

            def rerun(values):
                """The task losses from a forward pass at `values` of `variables`."""
                by_id = {id(v): value for v, value in zip(variables, values)}
                trainable = [by_id.get(id(v), v.value) for v in self.model.trainable_variables]
                non_trainable = [v.value for v in self.model.non_trainable_variables]
                y_pred, _ = self.model.stateless_call(trainable, non_trainable, inputs, training=True)
                return task_losses(y_pred)

            values = [v.value for v in variables]
            jacobian = backend.replica_sum(backend.task_gradients(task_losses(y_pred), rerun, values))
        if rule.split_batch:
            a, b = jacobian[: self.num_tasks], jacobian[self.num_tasks :]
            gram = ops.matmul(a, ops.transpose(b))
            gram = 0.5 * (gram + ops.transpose(gram))
        else:
            gram = ops.matmul(jacobian, ops.transpose(jacobian))
        return ops.stop_gradient(gram)

    def _representation_jacobian(self, name, features, losses, rerun, segments=None):
        """`[n, D]`: row k is `sum_i dlosses[k] / dh_i` over the rows `h_i` of `features`.

        The gradient of a per-feature shift of the representation. In
        general this takes n backward passes through the layers above it
        (batched). With per-example tasks (`segments`: example i's row of the
        result) and layers above the representation that compute each
        example from that example alone (see `_independent_above`), one
        backward pass of `sum(losses)` gives each example's gradient
        `dL / dh_i`, which belongs to its own row only: summing them by
        segment is the same matrix.
        """
        n = losses.shape[0]
        batch = ops.shape(features)[0]
        # Checked by `_attach` before the step is traced; unchecked: no.
        if segments is not None and self.__dict__.get("_independent", {}).get(name, False):
            total = lambda values: ops.sum(rerun(values))[None]
            per_example = ops.reshape(backend.task_gradients(ops.sum(losses)[None], total, [features]), (batch, -1))
            return ops.matmul(ops.transpose(ops.one_hot(segments, n)), per_example)
        jacobian = backend.task_gradients(losses, rerun, [features])
        return ops.sum(ops.reshape(jacobian, (n, batch, -1)), axis=1)

    def _independent_above(self, name):
        """Whether the layers above layer `name` keep the examples apart.

        Checked once per layer, eagerly (`fit` checks as it begins, before
        the step is compiled), on a probe: random representations of three
        examples, and the gradient of a random projection of the first
        example's output. It is exactly 0 on the other two unless some layer
        mixes examples (batch normalisation in training mode). A probe with
        unknown dimensions cannot be made: then the answer is no.
        """
        verdicts = self.__dict__.setdefault("_independent", {})  # untracked
        if name not in verdicts:
            head = self._split_at(name)[1]
            spec = head.inputs[0]
            if any(d is None for d in spec.shape[1:]):
                verdicts[name] = False
                return False
            rng = np.random.default_rng(0)
            probe = ops.convert_to_tensor(rng.normal(size=(3, *spec.shape[1:])), spec.dtype)
            run = lambda h: tree.flatten(_stateless_forward(head, h))
            directions = [ops.convert_to_tensor(rng.normal(size=tuple(o.shape[1:])), "float32") for o in run(probe)]

            def first_example(h):
                return ops.sum(ops.stack([ops.sum(ops.cast(o[0], "float32") * d) for o, d in zip(run(h), directions)]))

            others = ops.convert_to_numpy(backend.gradient(first_example, probe)[1:])
            verdicts[name] = not np.any(others)
        return verdicts[name]

    def _gradient_variables(self, layer_names):
        if layer_names is None:
            return self.model.trainable_variables
        layers = {layer.name: layer for layer in self.model._flatten_layers(include_self=False)}
        missing = [name for name in layer_names if name not in layers]
        if missing:
            raise ValueError(
                f"Lookahead(layers={layer_names}): no layer named {missing} in the "
                f"wrapped model. Its layers are {sorted(layers)}."
            )
        variables = [v for name in layer_names for v in layers[name].trainable_variables]
        if not variables:
            raise ValueError(f"Lookahead(layers={layer_names}): these layers have no trainable weights.")
        return variables

    def _task_shares(self, x, y, y_pred, sample_weight, example_mask=None):
        """`[K]`: this replica's loss sum of each task over its global count."""
        grouped = self._grouped(x, y, y_pred, sample_weight, example_mask)
        counts = backend.replica_sum(grouped.totals()[: self.num_tasks, 1])
        return grouped.task_sums() / ops.maximum(counts, 1e-12)

    def _grouped(self, x, y, y_pred, sample_weight, example_mask=None):
        """The step's per-element loss split into tasks: a `task_groups.GroupedLoss`."""
        if self.loss is None:
            raise ValueError(
                "MinimaxModel needs a loss: call `model.compile(loss=...)` with "
                "the per-element loss to split into tasks."
            )
        if self.task_key is None:
            return self._grouped_by_output(y, y_pred, sample_weight, example_mask)
        task_ids = self._task_ids(x)
        loss_fn = _unreduced(self.loss)
        if isinstance(y_pred, (dict, list, tuple)):
            raise ValueError(
                "MinimaxModel with `task_key` expects a single-output model; "
                "for one task per output pass `task_key=None`."
            )
        losses = loss_fn(y, y_pred)
        return task_groups.ByTaskId(losses, task_ids, sample_weight, self.num_tasks, example_mask)

    def _task_ids(self, x):
        key = self.task_key
        if not isinstance(x, dict) or key not in x:
            raise self._missing_key_error(x)
        ids = x[key]
        dtype = keras.backend.standardize_dtype(ids.dtype)
        if "int" not in dtype:
            raise TypeError(
                f"Task ids in x[{key!r}] must be integers in [0, {self.num_tasks}); "
                f"got dtype {dtype}. Cast them, e.g. `ids.astype('int32')` or "
                "`tf.cast(ids, 'int32')`."
            )
        return ids

    def _missing_key_error(self, x):
        key = self.task_key
        got = sorted(x) if isinstance(x, dict) else type(x).__name__
        return KeyError(
            f"MinimaxModel expects the task ids in x[{key!r}], but x has "
            f"{'keys ' if isinstance(x, dict) else 'type '}{got}. Give x as a "
            f"dict, e.g. {{'features': features, {key!r}: task_ids}}, set "
            "`task_key` to the key that holds the ids, or use "
            "`task_key=None` for one task per output."
        )

    def _grouped_by_output(self, y, y_pred, sample_weight, example_mask=None):
        names = self.task_names
        if isinstance(y_pred, dict):
            if sorted(y_pred) != sorted(names):
                raise ValueError(
                    f"The model's outputs are {sorted(y_pred)} but the tasks are "
                    f"{names}; with `task_key=None` each output is a task: pass "
                    "`task_names` equal to the output names."
                )
            outputs = list(names)
            pick = lambda s, name, k: s[name] if isinstance(s, dict) else s[k]
        elif isinstance(y_pred, (list, tuple)):
            if len(y_pred) != self.num_tasks:
                raise ValueError(
                    f"The model has {len(y_pred)} outputs but MinimaxModel has "
                    f"{self.num_tasks} tasks; with `task_key=None` each output "
                    "is a task: set `num_tasks` to the number of outputs."
                )
            outputs = list(range(len(y_pred)))
            pick = lambda s, name, k: s[k]
        else:
            raise ValueError(
                "MinimaxModel with `task_key=None` treats each output as a task, "
                "but the model has a single output. Give the task ids in "
                "x[task_key] instead, or use a multi-output model."
            )
        losses, weights = [], []
        for k, name in enumerate(outputs):
            loss_fn = _unreduced(pick(self.loss, name, k) if isinstance(self.loss, (dict, list, tuple)) else self.loss)
            losses.append(loss_fn(pick(y, name, k), pick(y_pred, name, k)))
            weights.append(None if sample_weight is None else pick(sample_weight, name, k))
        return task_groups.ByOutput(losses, weights, example_mask)

    # --- Logs and guards --------------------------------------------------

    def get_metrics_result(self):
        return backend.reducible_logs(super().get_metrics_result())

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        trains = self.__dict__.get("_step_trains", True)
        if trains and not self._batch_task_logs:
            # Nobody reads the per-task vector after each training batch:
            # the step does not output it (on JAX that output costs as much
            # as the rest of the task logic, benchmarks/RESULTS.md). It stays
            # in the metric; the key stays too, so that Keras still takes the
            # epoch's logs from the metrics, vector included. (Test steps
            # always output it: `evaluate` does not rebuild them.)
            logs = {**logs, TASK_LOGS_KEY: None}
        return logs

    def _read_batch_task_logs(self, read):
        """Makes the training step output the per-task vector after every batch, or not.

        Called as `fit` begins; the step reads the setting when it is
        traced, so it is rebuilt if the setting changed. TensorFlow's steps
        always output it (see `backend.drops_unread_logs`).
        """
        read = read or not backend.drops_unread_logs()
        if read != self._batch_task_logs:
            self._batch_task_logs = read
            self.make_train_function(force=True)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Called by the TensorFlow trainer only, and a no-op there without a
        # tf.distribute strategy. Keras builds the model from the first batch
        # *averaged over the replicas*, which turns integer task ids into
        # floats and fails on bool inputs (keras-hub's `padding_mask`): build
        # it from the first replica's shard instead.
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                first_shard = self._distribute_strategy.experimental_local_results
                data_batch = tree.map_structure(lambda v: first_shard(v)[0], next(batches))
                break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def fit(self, *args, **kwargs):
        attached = self.mirror_descent
        try:
            return self._guarded(super().fit, 5, args, kwargs)
        finally:
            # A MirrorDescent callback attaches its rule for this fit only,
            # however the fit ends (even interrupted). Its compiled step is
            # kept aside for the next fit with the same settings, so that
            # calling `fit` in a loop compiles once.
            if self.mirror_descent is not attached:
                key = (self._step_key(self.mirror_descent), self._compile_config)
                self.__dict__["_parked_step"] = (key, self.train_function)
                self.mirror_descent = attached
                self.train_function = None

    def make_train_function(self, force=False):
        if force or self.train_function is None:
            # The step reads the rule when it is traced. JAX caches traces by
            # the function it jits, and Keras jits `self.train_step`, a bound
            # method equal to every other: while a step built for one rule is
            # alive (kept for a later fit), a step built for another would
            # find its trace. A new callable per build keeps them apart.
            self.__dict__["train_step"] = functools.partial(type(self).train_step, self)
        return super().make_train_function(force=force)

    def _attach(self, descent):
        """Makes the `MirrorDescent` callback `descent` drive the training step.

        Called as `fit` begins: the rule is traced into the step, so the step
        is rebuilt unless the one kept from an earlier fit has the same rule
        and settings, and the model has not been compiled again since (each
        `compile` makes a new `_compile_config`).
        """
        self.mirror_descent = descent
        representation = getattr(descent and descent.rule, "representation", None)
        if representation is not None:
            self._independent_above(representation)  # now, before the step is traced
        (key, compiled), step = self.__dict__.pop("_parked_step", ((None, None), None))
        if step is not None and key == self._step_key(descent) and compiled is self._compile_config:
            self.train_function = step
        else:
            self.make_train_function(force=True)

    def _step_key(self, descent):
        """What a compiled step takes from a `MirrorDescent` and the logs setting.

        Objects in the rule's config (a schedule) compare by identity.
        """
        rule = descent.rule
        settings = (descent.update_every, descent.warmup_steps, self._batch_task_logs)
        return (type(rule), repr(rule.get_config()), *settings)

    def evaluate(self, *args, return_dict=False, **kwargs):
        logs = self._guarded(super().evaluate, 6, args, {**kwargs, "return_dict": True})
        expand_task_logs(logs, self.task_names)
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def _guarded(self, run, callbacks_position, args, kwargs):
        """Runs `fit`/`evaluate` with a `_TaskGuard`, raising its error after."""
        args = list(args)
        positional = len(args) > callbacks_position
        callbacks = args[callbacks_position] if positional else kwargs.get("callbacks")
        if isinstance(callbacks, keras.callbacks.CallbackList):
            # `fit` validating: its own callbacks already hold the guard.
            return run(*args, **kwargs)
        distribution = keras.distribution.distribution()
        if distribution is not None and keras.backend.backend() != "jax":
            # Keras implements keras.distribution on JAX only; elsewhere it
            # would silently train on one device.
            raise ValueError(
                f"A keras.distribution ({type(distribution).__name__}) is set, but it "
                f"distributes nothing on the {keras.backend.backend()} backend: Keras "
                "implements it on JAX only. On TensorFlow, create and compile the "
                "model under `tf.distribute.MirroredStrategy().scope()` (or "
                "`MultiWorkerMirroredStrategy`); on torch, use a DDP training loop "
                "(see guides/distributed_training.py). Or unset it with "
                "`keras.distribution.set_distribution(None)`."
            )
        callbacks = list(callbacks or [])
        guard = _TaskGuard(self, callbacks)
        callbacks = [guard] + callbacks
        if positional:
            args[callbacks_position] = callbacks
        else:
            kwargs["callbacks"] = callbacks
        result = run(*args, **kwargs)
        if guard.error is not None:
            raise guard.error
        return result

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "task_names": self.task_names,
            "task_key": self.task_key,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)


class _TaskGuard(keras.callbacks.Callback):
    """Turns the step's internal logs into user logs; stops on bad input.

    It is the first callback of every `fit` and `evaluate`: it spreads the
    packed per-task vector into `loss/<task>`, `weight/<task>` and
    `loss/worst` floats before the other callbacks see the logs. A compiled
    step cannot raise, so the step counts the invalid task ids in that
    vector; this callback stops the loop (so the model state is synced on
    every backend) and `MinimaxModel` raises after. It holds the model
    directly: `self.model` would sync JAX state each batch.

    On JAX and torch the training step outputs the vector after every batch
    only when something reads batch logs (the progress bar, a callback with
    a batch-end hook, as Keras itself tells); otherwise only the epoch's
    logs carry it, and invalid ids stop training at the end of the epoch.
    A non-finite loss, which every batch's `loss` shows, stops it within
    the epoch: a few batches late on JAX and torch, where Keras runs this
    `async_safe` callback in a worker thread; on TensorFlow, whose steps
    always output the vector, at the bad batch. The warning names
    the tasks with a non-finite loss over the epoch. The task weights stay
    finite either way: a step with a non-finite loss does not change them.
    """

    # Reading the logs after every batch on the loop's own thread would make
    # each step wait for the previous one: about a tenth of a small model's
    # step time on JAX (benchmarks/RESULTS.md).
    async_safe = True

    def __init__(self, minimax, callbacks):
        super().__init__()
        self.minimax = minimax
        self.error = None
        self.non_finite_batch = None
        # Keras' own test for whether to dispatch batch logs asynchronously.
        hooks = ("on_batch_end", "on_train_batch_end", "on_test_batch_end")
        self.users_read_batches = any(
            not getattr(getattr(callback, hook), "_is_default", False)
            for callback in callbacks for hook in hooks
        )
        self.batch_logs = True

    def on_train_begin(self, logs=None):
        self.on_test_begin()
        self.minimax._read_batch_task_logs(self.batch_logs)

    def on_test_begin(self, logs=None):
        self.batch_logs = self.users_read_batches or self.params.get("verbose") == 1

    def _expand(self, logs, prefix="", batch=False):
        """Expands `logs` in place; True if they counted invalid task ids."""
        if not logs:
            return False
        if batch and not self.batch_logs:
            # Nobody reads the values (test steps, and TensorFlow's training
            # steps, output them all the same): only the invalid ids count.
            invalid = count_invalid_ids(logs.pop(TASK_LOGS_KEY, None), len(self.minimax.task_names))
        else:
            invalid = expand_task_logs(logs, self.minimax.task_names, prefix)
        if invalid and self.error is None:
            m = self.minimax
            self.error = ValueError(
                f"{invalid} task ids in x[{m.task_key!r}] are outside "
                f"[0, {m.num_tasks}) for MinimaxModel with tasks {m.task_names}. "
                "Map every id into that range or set `num_tasks` to the number "
                "of tasks; give positions to ignore sample weight 0."
            )
        return invalid > 0

    def on_train_batch_end(self, batch, logs=None):
        if self._expand(logs, batch=True):
            self.minimax.stop_training = True
        if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
            if self.non_finite_batch is None:
                self.non_finite_batch = batch
            self.minimax.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self._expand(logs, batch=True):
            self.minimax.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        # The callbacks after this one, History and the progress bar see one
        # float per task.
        if self._expand(logs):
            self.minimax.stop_training = True
        self._expand(logs, "val_")
        if self.non_finite_batch is not None:
            names = self.minimax.task_names
            bad = [name for name in names if not math.isfinite(logs.get(f"loss/{name}", 0.0))]
            warnings.warn(
                f"Non-finite loss for task(s) {bad or names} at batch "
                f"{self.non_finite_batch} of epoch {epoch}: training stopped and "
                "the task weights were left at their last finite values. Check "
                "that task's data and labels, or lower the learning rate.",
                RuntimeWarning,
                stacklevel=2,
            )
            self.non_finite_batch = None

    def on_test_end(self, logs=None):
        self._expand(logs)


def _stateless_forward(model, inputs):
    """`model(inputs, training=True)`, leaving its state (batch statistics) as it is."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    return model.stateless_call(trainable, non_trainable, inputs, training=True)[0]


def _unreduced(loss):
    """A per-element version of a Keras loss (string, function or `Loss`).

    A `Loss`'s `call` is its unreduced form; `__call__` adds the dtype
    conversion done here and the reduction we do per task instead.
    """
    loss = keras.losses.get(loss)
    if not isinstance(loss, keras.losses.Loss):
        return loss

    def per_element(y_true, y_pred):
        convert = lambda t: ops.convert_to_tensor(t, dtype=loss.dtype)
        return loss.call(tree.map_structure(convert, y_true), tree.map_structure(convert, y_pred))

    return per_element
