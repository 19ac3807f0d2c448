"""The K x K inner products of the task-loss gradients that `Lookahead` needs."""

import keras
import numpy as np
from keras import ops
from keras import tree

from keras_taskrobust import _keras_compat as compat
from keras_taskrobust import backend
from keras_taskrobust.models import task_inputs


class TaskGram:
    """Computes `G`, the Gram matrix of the task-loss gradients, in a training step.

    `rules.Lookahead` is pure maths on `G`; this object computes `G` from a
    `MinimaxModel`'s step, for the rule's settings:

    - `layers=None` or a list of layer names: the gradients with respect to
      those layers' weights (all trainable weights by default), from each
      backend's autodiff (`backend.task_gradients`);
    - `representation=<layer name>`: the gradients with respect to a shift
      of that layer's output, one backward pass through the layers above it
      where they keep the examples apart (checked once, `prepare`);
    - `split_batch=True`: the inner products between the gradients on the
      even and on the odd examples of the global batch, an estimate of `G`
      whose noise does not inflate the diagonal.

    Data-parallel: each replica differentiates its share of the task losses
    (its sums over the global counts) and the Jacobians are summed.

    Args:
        minimax: the `MinimaxModel` whose step it serves.
    """

    def __init__(self, minimax):
        self.minimax = minimax
        # Layer name -> whether the layers above it keep examples apart.
        self.independent = {}
        self._splits = {}
        # Kept per thread: tf.distribute runs each replica's step in a
        # thread of its own.
        self._representations = {}
        # Rule -> its compiled held-out `G` (`held_out.task_gram`).
        self.held_out_functions = {}

    def prepare(self, rule):
        """Checks, eagerly and before the step is traced, what the step may assume."""
        if rule is not None and getattr(rule, "representation", None) is not None:
            self._independent_above(rule.representation)

    def forward(self, inputs, representation, training):
        """The model's output, run in two parts at layer `representation`, keeping the cut."""
        trunk, head = self._split_at(representation)
        features = trunk(inputs, training=training)
        self._representations[backend.replica_key()] = features
        return head(features, training=training)

    def __call__(self, x, y, y_pred, sample_weight, rule):
        """`G` `[K, K]` (a constant of the step) for `rule`'s settings."""
        m = self.minimax
        inputs = task_inputs.model_inputs(x, m.task_key)
        size = ops.shape(tree.flatten(y_pred)[0])[0]
        offset = backend.replica_offset(size) if rule.split_batch else 0

        def task_losses(y_pred):
            if not rule.split_batch:
                return self._task_shares(x, y, y_pred, sample_weight)
            # Task losses on the even and on the odd examples of the global
            # batch: [2K].
            parity = (ops.arange(size) + offset) % 2
            halves = [
                self._task_shares(x, y, y_pred, sample_weight, ops.cast(parity == half, "float32"))
                for half in (0, 1)
            ]
            return ops.concatenate(halves)

        if rule.representation is not None:
            features = self._representations.pop(backend.replica_key())
            head = self._split_at(rule.representation)[1]

            def rerun(values):
                # Stateless: a re-run must not update the head's state again
                # (batch normalisation's moving statistics).
                return task_losses(stateless_forward(head, values[0]))

            segments = None
            ids = None if m.task_key is None else task_inputs.task_ids(x, m.task_key, m.num_tasks)
            if ids is not None and len(ids.shape) == 1:
                # Per-example tasks: the row of example i's task (and half).
                # Invalid ids are in no task: their examples' gradients are 0.
                k = m.num_tasks
                segments = ops.where((ids >= 0) & (ids < k), ids, 0)
                if rule.split_batch:
                    segments = segments + k * ((ops.arange(size) + offset) % 2)
            jacobian = self._representation_jacobian(
                rule.representation, features, task_losses(y_pred), rerun, segments
            )
        else:
            variables = self._gradient_variables(rule.layers)

            def rerun(values):
                """The task losses from a forward pass at `values` of `variables`."""
                by_id = {id(v): value for v, value in zip(variables, values)}
                trainable = [by_id.get(id(v), v.value) for v in m.model.trainable_variables]
                non_trainable = [v.value for v in m.model.non_trainable_variables]
                y_pred, _ = m.model.stateless_call(trainable, non_trainable, inputs, training=True)
                return task_losses(y_pred)

            jacobian = backend.task_gradients(task_losses(y_pred), rerun, [v.value for v in variables])
        jacobian = backend.replica_sum(jacobian)
        if rule.split_batch:
            a, b = jacobian[: m.num_tasks], jacobian[m.num_tasks :]
            gram = ops.matmul(a, ops.transpose(b))
            gram = 0.5 * (gram + ops.transpose(gram))
        else:
            gram = ops.matmul(jacobian, ops.transpose(jacobian))
        return ops.stop_gradient(gram)

    def _task_shares(self, x, y, y_pred, sample_weight, example_mask=None):
        """`[K]`: this replica's loss sum of each task over its global count."""
        grouped = task_inputs.grouped_loss(self.minimax, x, y, y_pred, sample_weight, example_mask)
        counts = backend.replica_sum(grouped.totals()[: self.minimax.num_tasks, 1])
        return grouped.task_sums() / ops.maximum(counts, 1e-12)

    def _layers(self):
        return {layer.name: layer for layer in compat.flatten_layers(self.minimax.model, include_self=False)}

    def _split_at(self, name):
        """`(trunk, head)`: the wrapped model cut at layer `name`'s output."""
        if name not in self._splits:
            model = self.minimax.model
            layers = self._layers()
            if name not in layers or not hasattr(model, "inputs"):
                raise ValueError(
                    f"Lookahead(representation={name!r}) needs a functional or "
                    f"Sequential model with a layer of that name; its layers are "
                    f"{sorted(layers)}."
                )
            output = layers[name].output
            # The wrapped model's input and output structures (a dict of
            # outputs stays a dict: the losses are keyed by output name); a
            # Sequential's are one tensor each.
            sequential = isinstance(model, keras.Sequential)
            inputs = model.inputs[0] if sequential else model.input
            outputs = model.outputs[0] if sequential else model.output
            self._splits[name] = (keras.Model(inputs, output), keras.Model(output, outputs))
        return self._splits[name]

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
        if segments is not None and self.independent.get(name, False):
            total = lambda values: ops.sum(rerun(values))[None]
            per_example = ops.reshape(backend.task_gradients(ops.sum(losses)[None], total, [features]), (batch, -1))
            return ops.matmul(ops.transpose(ops.one_hot(segments, n)), per_example)
        jacobian = backend.task_gradients(losses, rerun, [features])
        return ops.sum(ops.reshape(jacobian, (n, batch, -1)), axis=1)

    def _independent_above(self, name):
        """Whether the layers above layer `name` keep the examples apart.

        Checked once per layer, eagerly, on a probe: random representations
        of three examples, and the gradient of a random projection of the
        first example's output. It is exactly 0 on the other two unless some
        layer mixes examples (batch normalisation in training mode). A probe
        with unknown dimensions cannot be made: then the answer is no.
        """
        if name not in self.independent:
            head = self._split_at(name)[1]
            spec = head.inputs[0]
            if any(d is None for d in spec.shape[1:]):
                self.independent[name] = False
                return False
            rng = np.random.default_rng(0)
            probe = ops.convert_to_tensor(rng.normal(size=(3, *spec.shape[1:])), spec.dtype)
            run = lambda h: tree.flatten(stateless_forward(head, h))
            directions = [ops.convert_to_tensor(rng.normal(size=tuple(o.shape[1:])), "float32") for o in run(probe)]

            def first_example(h):
                return ops.sum(ops.stack([ops.sum(ops.cast(o[0], "float32") * d) for o, d in zip(run(h), directions)]))

            others = ops.convert_to_numpy(backend.gradient(first_example, probe)[1:])
            self.independent[name] = not np.any(others)
        return self.independent[name]

    def _gradient_variables(self, layer_names):
        if layer_names is None:
            return self.minimax.model.trainable_variables
        layers = self._layers()
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


def stateless_forward(model, inputs):
    """`model(inputs, training=True)`, leaving its state (batch statistics) as it is."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    return model.stateless_call(trainable, non_trainable, inputs, training=True)[0]
