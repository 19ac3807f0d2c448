"""The callback that turns the task-weight updates on."""

import keras
import numpy as np
from keras import ops

from keras_taskrobust import rules
from keras_taskrobust.models import held_out as held_out_signal


class MirrorDescent(keras.callbacks.Callback):
    """Moves a `MinimaxModel`'s task weights with a weighting rule during `fit`.

    Without this callback the task weights of a `MinimaxModel` stay where
    they are (uniform at first). With it, every training step folds the
    batch's group losses into the loss estimates and, at every
    `update_every`-th step after `warmup_steps` uniform steps, sets the
    weights with `rule.update` (mirror ascent on the simplex for
    `ExponentiatedGradient`). The update runs inside the compiled training
    step on every backend, so it takes effect at every configured step (on
    JAX too, where the step is a stateless jitted function). The callback
    only configures: `MinimaxModel.fit` finds it among its callbacks and
    traces its rule into the step for that `fit` (one `MirrorDescent` per
    `fit`). In a custom training loop, call `on_train_begin()` once the
    callback's model is set (`set_model`), or `model.use_weighting(callback)`.

    Step sizes and their schedules belong to the rule:
    `ExponentiatedGradient(step_size=keras.optimizers.schedules.ExponentialDecay(...))`
    evaluates the schedule at the number of weight updates made so far.

    Args:
        rule: a `keras_taskrobust.rules.WeightingRule`, or the name of one
            (`"uniform"`, `"exponentiated_gradient"`, `"softmax"`,
            `"hard_max"`) with default settings. Defaults to
            `"exponentiated_gradient"`.
        update_every: update the weights every this many steps. Defaults to 1.
        warmup_steps: number of first training steps with uniform weights
            (counted over the model's whole training, so a resumed run does
            not warm up again). Defaults to 0.
        held_out: data to take the rule's signal from instead of the
            training batch: a tuple `(x, y)` or `(x, y, sample_weight)` of
            arrays, or a finite, batched `tf.data.Dataset` of those, with the
            task ids in the same form as in training. Every `update_every`
            steps (after `warmup_steps`) each task's mean loss on it is
            measured in inference mode, outside the training step and its
            gradients, and the rule updates the weights from those losses
            (its estimates of them are the model's `held_out_losses`, saved
            with the model); the training step then leaves the weights
            alone. Logs `held_out/<task>`. A rule that needs the task
            gradients (`Lookahead`) takes them on the held-out data too.
            Defaults to `None` (the training batch's group losses, inside
            the step).
        reference_losses: K floats; the rule then sees each task's *excess*
            loss, `max(L_k - reference_losses[k], 0)`, so that a task's
            irreducible loss draws no weight (DoReMi). Defaults to `None`.
        reference: a Keras model taking the same inputs as the wrapped
            model (e.g. a copy trained briefly with uniform weights), kept
            frozen: the rule sees each task's mean per-element excess over
            the reference model's loss on the same element, clipped at 0,
            on the held-out data with `held_out`, otherwise on each training
            batch (one more forward pass a step, inside the step). Needs
            task ids in x. Defaults to `None`.

    Example:

    >>> import keras
    >>> from keras_taskrobust.rules import ExponentiatedGradient
    >>> decay = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
    >>> callback = MirrorDescent(ExponentiatedGradient(step_size=decay),
    ...                          update_every=2, warmup_steps=10)
    >>> callback.rule.step_size is decay
    True
    """

    def __init__(
        self,
        rule="exponentiated_gradient",
        update_every=1,
        warmup_steps=0,
        held_out=None,
        reference_losses=None,
        reference=None,
    ):
        super().__init__()
        self.rule = rules.get(rule)
        if int(update_every) != update_every or update_every < 1:
            raise ValueError(f"`update_every` must be an integer >= 1; got {update_every}.")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0; got {warmup_steps}.")
        self.update_every = int(update_every)
        self.warmup_steps = int(warmup_steps)
        self.held_out = held_out
        self.reference = reference
        self.reference_losses = None if reference_losses is None else [float(v) for v in reference_losses]
        if held_out is not None:
            # A batch hook only when measuring: Keras (and the training step)
            # treat any callback with one as a reader of every batch's logs.
            self.on_train_batch_end = self._measure_when_due
        self.held_out_results = None

    def signal(self, losses):
        """What the rule sees of the step's group losses `[K]`: the excess over `reference_losses`, if any."""
        if self.reference_losses is None:
            return losses
        return ops.maximum(losses - ops.convert_to_tensor(self.reference_losses, "float32"), 0.0)

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "use_weighting"):
            raise TypeError(
                "MirrorDescent updates the task weights of a "
                f"keras_taskrobust.MinimaxModel; got {type(model).__name__}. "
                "Wrap the model: `MinimaxModel(model, num_tasks=K)`."
            )
        if self.reference is not None and model.task_key is None:
            raise ValueError(
                "MirrorDescent(reference=...) needs task ids in x (per example or per element); "
                "with one task per output, give fixed `reference_losses` instead."
            )
        if self.reference_losses is not None and len(self.reference_losses) != model.num_tasks:
            raise ValueError(
                f"`reference_losses` has {len(self.reference_losses)} values but the "
                f"model has {model.num_tasks} tasks {model.task_names}; give one per task."
            )
        # In `fit` the model has already taken this rule for its step (a
        # no-op here); in a custom training loop this turns it on.
        model.use_weighting(self)
        self._steps_done = int(model.task_step.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = getattr(self, "_steps_done", 0)

    def _measure_when_due(self, batch, logs=None):
        # Counted here rather than read from the model: reading its state
        # after every batch would make JAX wait for each step.
        before, self._steps_done = self._steps_done, self._epoch_start + batch + 1
        due = [
            s for s in range(before + 1, self._steps_done + 1)
            if s > self.warmup_steps and (s - self.warmup_steps) % self.update_every == 0
        ]
        if not due:
            return
        model = self.model  # syncs JAX's training state into the variables
        losses, present = held_out_signal.task_losses(model, self.held_out, self.reference, self.reference_losses)
        updates = (due[-1] - self.warmup_steps) // self.update_every - 1
        gram = held_out_signal.task_gram(model, self.held_out, self.rule) if self.rule.needs_gradients else None
        held_out_signal.update_weights(model, self, losses, present, updates, gram)
        self.held_out_results = dict(zip(model.task_names, np.asarray(losses, "float64").tolist()))
        if logs is not None:
            logs.update(self._held_out_logs())

    def _held_out_logs(self):
        return {f"held_out/{name}": value for name, value in (self.held_out_results or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._held_out_logs())
